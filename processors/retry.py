"""Retries and circuit breakers as pure state transitions (times are epoch ms, passed in).

The wiring arms a timer for `next_retry_at(...)` instead of sleeping, and keeps one
`Breaker` per resource id; nothing here reads a clock, so a replay decides the same.

    next_retry_at(attempt, base_s, factor, max_s, failed_at_ms) -> int
    retry_decision(attempt, failed_at_ms, config) -> Retry | GiveUp
    timed_out(assigned_at_ms, deadline_hours, now_ms) -> bool
    Breaker: allows(now_ms, cooldown_ms), on_success(), on_failure(now_ms, threshold, cooldown_ms)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Union

from .config import PlanningConfig

HOUR_MS = 3_600_000


def backoff_seconds(attempt: int, base_s: float, factor: float, max_s: float) -> float:
    """The wait after failed attempt `attempt` (1-based): base, base*factor, ... capped at max_s."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    # cap the exponent: factor ** attempt overflows long before it matters
    delay = base_s
    for _ in range(attempt - 1):
        delay *= factor
        if delay >= max_s:
            return max_s
    return min(delay, max_s)


def next_retry_at(attempt: int, base_s: float, factor: float, max_s: float, failed_at_ms: int) -> int:
    """When attempt `attempt + 1` may be assigned, after attempt `attempt` failed at `failed_at_ms`."""
    return failed_at_ms + round(backoff_seconds(attempt, base_s, factor, max_s) * 1000)


def timed_out(assigned_at_ms: int, deadline_hours: float, now_ms: int) -> bool:
    """An attempt with no outcome by its deadline counts as failed (stuck executor, lost record)."""
    return now_ms >= assigned_at_ms + round(deadline_hours * HOUR_MS)


def attempt_deadline_ms(assigned_at_ms: int, deadline_hours: float) -> int:
    """The epoch ms at which an attempt assigned at `assigned_at_ms` times out (for the timer)."""
    return assigned_at_ms + round(deadline_hours * HOUR_MS)


@dataclass(frozen=True)
class Retry:
    """Assign attempt `attempt` no earlier than `at_ms`."""

    attempt: int
    at_ms: int


@dataclass(frozen=True)
class GiveUp:
    """No attempts left: the task has failed for good (a replanning trigger)."""

    attempts: int
    reason: str


RetryDecision = Union[Retry, GiveUp]


def retry_decision(attempt: int, failed_at_ms: int, config: PlanningConfig) -> RetryDecision:
    """After attempt `attempt` failed (or timed out): retry later, or give up after
    `config.max_task_attempts` attempts."""
    if attempt >= config.max_task_attempts:
        return GiveUp(attempt, f"failed after {attempt} attempt(s) (max_task_attempts={config.max_task_attempts})")
    at = next_retry_at(attempt, config.retry_base_seconds, config.retry_backoff_factor,
                       config.retry_max_seconds, failed_at_ms)
    return Retry(attempt + 1, at)


class BreakerState(str, Enum):
    CLOSED = "CLOSED"          # assign freely
    OPEN = "OPEN"              # keeps failing: assign nothing until the cool-down has passed
    HALF_OPEN = "HALF_OPEN"    # cool-down passed: one trial assignment decides


@dataclass(frozen=True)
class Breaker:
    """A per-resource circuit breaker. CLOSED -> OPEN after `threshold` consecutive
    failures; OPEN -> HALF_OPEN once `cooldown_ms` has passed since it opened; HALF_OPEN
    -> CLOSED on a success, back to OPEN (cool-down restarts) on a failure.

    A failure names its task when it can: then only failures of *different* tasks count. One
    task that fails on every attempt is the task's fault (its retries and attempt limit deal
    with it); counting it opened the breakers of every resource it was retried on, and every
    other plan's work waited out the cool-down."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0              # consecutive failures (of different tasks, where named)
    opened_at_ms: int | None = None
    trial_in_flight: bool = False  # HALF_OPEN: the one trial assignment is out
    failed: tuple[tuple[str, str], ...] = ()   # the tasks of those failures (bounded by the threshold)

    def current(self, now_ms: int, cooldown_ms: int) -> "Breaker":
        """The breaker as of `now_ms`: an OPEN one whose cool-down passed is HALF_OPEN."""
        if self.state is BreakerState.OPEN and self.opened_at_ms is not None \
                and now_ms >= self.opened_at_ms + cooldown_ms:
            return dataclasses.replace(self, state=BreakerState.HALF_OPEN, trial_in_flight=False)
        return self

    def allows(self, now_ms: int, cooldown_ms: int) -> bool:
        """May a new attempt be assigned to this resource now? (HALF_OPEN: only the one trial.)"""
        b = self.current(now_ms, cooldown_ms)
        return b.state is BreakerState.CLOSED or (b.state is BreakerState.HALF_OPEN and not b.trial_in_flight)

    def on_assigned(self, now_ms: int, cooldown_ms: int) -> "Breaker":
        """Record an assignment: in HALF_OPEN it is the trial, so no second one goes out."""
        b = self.current(now_ms, cooldown_ms)
        if b.state is BreakerState.HALF_OPEN:
            return dataclasses.replace(b, trial_in_flight=True)
        return b

    def on_success(self) -> "Breaker":
        return Breaker()

    def on_failure(self, now_ms: int, threshold: int, cooldown_ms: int,
                   task: tuple[str, str] | None = None) -> "Breaker":
        """A failed or timed-out attempt on this resource; `task` = (plan id, task id)."""
        b = self.current(now_ms, cooldown_ms)
        if task is not None and task in b.failed:   # the same task again: says nothing new of the resource
            return dataclasses.replace(b, trial_in_flight=False) if b.state is BreakerState.HALF_OPEN else b
        failed = (b.failed + (task,))[-threshold:] if task is not None else b.failed
        failures = b.failures + 1
        if b.state is BreakerState.HALF_OPEN or (b.state is BreakerState.CLOSED and failures >= threshold):
            return Breaker(BreakerState.OPEN, failures, now_ms, failed=failed)
        # CLOSED below the threshold, or OPEN (a late failure of work sent before it opened)
        return dataclasses.replace(b, failures=failures, failed=failed)


def breaker_cooldown_ms(config: PlanningConfig) -> int:
    return round(config.breaker_cooldown_seconds * 1000)
