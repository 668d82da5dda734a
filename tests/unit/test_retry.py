"""Backoff, attempt limits, timeouts and the per-resource circuit breaker (times passed in)."""
import pytest

from processors.config import PlanningConfig
from processors.retry import (Breaker, BreakerState, GiveUp, Retry, attempt_deadline_ms, backoff_seconds,
                              next_retry_at, retry_decision, timed_out)

T = 1_700_000_000_000


def test_backoff_grows_exponentially_and_is_capped():
    # base 5 s, factor 2: 5, 10, 20, 40, ... capped at 30
    assert [backoff_seconds(a, 5, 2, 30) for a in (1, 2, 3, 4, 50_000)] == [5, 10, 20, 30, 30]
    assert next_retry_at(1, 5, 2, 30, T) == T + 5_000
    assert next_retry_at(3, 5, 2, 30, T) == T + 20_000
    with pytest.raises(ValueError):
        backoff_seconds(0, 5, 2, 30)


def test_retry_until_attempts_run_out():
    cfg = PlanningConfig(max_task_attempts=3, retry_base_seconds=5, retry_backoff_factor=2, retry_max_seconds=300)
    assert retry_decision(1, T, cfg) == Retry(2, T + 5_000)
    assert retry_decision(2, T, cfg) == Retry(3, T + 10_000)
    d = retry_decision(3, T, cfg)
    assert isinstance(d, GiveUp) and d.attempts == 3 and "3 attempt" in d.reason


def test_timed_out_attempt():
    assert attempt_deadline_ms(T, 2.0) == T + 7_200_000
    assert not timed_out(T, 2.0, T + 7_199_999)
    assert timed_out(T, 2.0, T + 7_200_000)


def test_breaker_closed_open_half_open_closed():
    cool = 60_000
    b = Breaker()
    assert b.allows(T, cool)
    b = b.on_failure(T, 3, cool).on_failure(T + 1, 3, cool)
    assert b.state is BreakerState.CLOSED and b.failures == 2 and b.allows(T, cool)
    b = b.on_failure(T + 2, 3, cool)                         # third consecutive failure opens it
    assert b.state is BreakerState.OPEN and b.opened_at_ms == T + 2
    assert not b.allows(T + 2 + cool - 1, cool)
    assert b.current(T + 2 + cool, cool).state is BreakerState.HALF_OPEN and b.allows(T + 2 + cool, cool)
    trial = b.on_assigned(T + 2 + cool, cool)                # one trial only
    assert trial.state is BreakerState.HALF_OPEN and not trial.allows(T + 2 + cool, cool)
    assert trial.on_success() == Breaker()


def test_half_open_failure_reopens_with_a_new_cool_down():
    cool = 60_000
    b = Breaker(BreakerState.OPEN, 3, T)
    b = b.on_failure(T + cool, 3, cool)                      # the trial failed
    assert b.state is BreakerState.OPEN and b.opened_at_ms == T + cool
    assert not b.allows(T + cool + 1, cool)


def test_a_success_resets_the_consecutive_count():
    b = Breaker().on_failure(T, 3, 1).on_failure(T, 3, 1).on_success().on_failure(T, 3, 1)
    assert b.state is BreakerState.CLOSED and b.failures == 1


def test_late_failure_while_open_keeps_the_cool_down():
    b = Breaker(BreakerState.OPEN, 3, T).on_failure(T + 10, 3, 60_000)
    assert b.state is BreakerState.OPEN and b.opened_at_ms == T and b.failures == 4


def test_one_task_failing_on_every_attempt_does_not_open_the_breaker():
    """A poison task retried on a resource says nothing of the resource: it took every healthy
    resource out for the cool-down, and every other plan's work with it."""
    cool = 60_000
    b = Breaker()
    for attempt in range(6):
        b = b.on_failure(T + attempt, 3, cool, task=("p-bad", "x"))
    assert b.state is BreakerState.CLOSED and b.failures == 1 and b.allows(T + 6, cool)
    b = b.on_failure(T + 7, 3, cool, task=("p-flaky", "f")).on_failure(T + 8, 3, cool, task=("p-bad", "x"))
    assert b.state is BreakerState.CLOSED and b.failures == 2
    b = b.on_failure(T + 9, 3, cool, task=("p-other", "y"))       # a third task: the resource is suspect
    assert b.state is BreakerState.OPEN and b.opened_at_ms == T + 9


def test_the_same_task_failing_its_half_open_trial_frees_the_trial_without_reopening():
    cool = 60_000
    b = Breaker(BreakerState.OPEN, 3, T, failed=(("p", "a"), ("p", "b"), ("p", "c")))
    trial = b.on_assigned(T + cool, cool)
    assert not trial.allows(T + cool, cool)
    again = trial.on_failure(T + cool + 1, 3, cool, task=("p", "c"))
    assert again.state is BreakerState.HALF_OPEN and again.allows(T + cool + 1, cool)
    other = trial.on_failure(T + cool + 1, 3, cool, task=("q", "z"))
    assert other.state is BreakerState.OPEN and other.opened_at_ms == T + cool + 1
    assert len(other.failed) == 3 and other.failed[-1] == ("q", "z")
