"""Live plans without Kafka: allocation through ledgers, dispatch once per attempt, retries
with backoff, timeouts, lost resources, stop/resume/cancel, progress versions and replans."""
import dataclasses

import pytest

from processors import allocation as A, lifecycle as L
from processors.allocation import Resource
from processors.config import PlanningConfig
from processors.ids import plan_id
from processors.model import PlanningError
from processors.retry import BreakerState
from streams import codec, state as state_codec
from topics import registry as T
from topics.serde import serde

CFG = PlanningConfig(refine_budget_seconds=0, retry_base_seconds=2, retry_backoff_factor=3,
                     max_task_attempts=3, progress_interval_seconds=10, enable_continuous_replanning=False)
T0 = 1_700_000_000_000
PID = plan_id("g1")
H = 3_600_000


def _res(rid, cost=1.0, caps=("build",), hb=T0, healthy=True, agents=2.0):
    return Resource(rid, "agents", frozenset(caps), {"agents": agents}, {"agents": agents}, cost, healthy, hb)


R1, R2 = _res("r1", 1.0), _res("r2", 5.0)


def _live(now=T0, resources=None, halted=False):
    """Resources default to R1, R2 with a heartbeat just now (not lost)."""
    if resources is None:
        resources = (dataclasses.replace(R1, heartbeat_ms=now), dataclasses.replace(R2, heartbeat_ms=now))
    return L.Live(now, tuple(resources), halted)


def _goal_rec(budget=None, tasks=None):
    r = {"goal_id": "g1", "title": "t", "created_at_ms": T0,
         "tasks": tasks or [{"task_id": "a", "name": "a", "duration_hours": 2, "capabilities": ["build"]},
                            {"task_id": "b", "name": "b", "duration_hours": 3, "depends_on": ["a"],
                             "capabilities": ["build"]}]}
    if budget is not None:
        r["constraints"] = {"budget": budget}
    return serde(T.GOALS_CREATED.name).decode(serde(T.GOALS_CREATED.name).encode(r))


def _start(live=None, **kw):
    return L.on_goal(None, codec.goal_from_record(_goal_rec(**kw)), {}, CFG, received_at_ms=T0,
                     live=live or _live())


def _of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def _grant(state, task, attempt=1, rid="r1", now=T0, live=None):
    return L.on_allocation(state, L.Decision(PID, task, attempt, rid, "GRANTED", cost_estimate=2.0), CFG,
                           live or _live(now))


def _fb(state, task, status, now, attempt=None, fid="", **kw):
    return L.on_feedback(state, L.Feedback(PID, task, status, now, attempt, feedback_id=fid, **kw), CFG, _live(now))


def _check_records(events):
    for o in codec.records(events):  # every event becomes a record its topic's schema accepts
        assert serde(o.topic).decode(serde(o.topic).encode(o.value)) == o.value


def test_ready_task_is_proposed_to_the_cheapest_fitting_resource_and_dispatched_only_on_grant():
    state, events = _start()
    reqs = _of(events, L.AllocationRequested)
    assert [(q.request.task_id, q.request.resource_id, q.request.attempt) for q in reqs] == [("a", "r1", 1)]
    assert not _of(events, L.TaskAssigned) and state.runs["a"].status is L.RunStatus.WAITING
    _check_records(events)
    assert codec.records(events)[-1].topic == T.ALLOCATION_REQUESTS.name and codec.records(events)[-1].key == "r1"
    granted, events = _grant(state, "a", now=T0 + 10)
    (assigned,) = _of(events, L.TaskAssigned)
    rec = codec.records(events)[0].value
    assert (rec["assigned_to"], rec["attempt"], rec["assigned_at_ms"]) == ("r1", 1, T0 + 10)
    assert rec["deadline_ms"] == T0 + 10 + int(CFG.default_task_timeout_hours * H)
    again, events = _grant(granted, "a", now=T0 + 20)   # a repeated grant: no second dispatch, no release
    assert not _of(events, L.TaskAssigned) and not _of(events, L.AllocationReleased)


def test_refused_tries_the_next_resource_then_waits_unplaced():
    state, _ = _start()
    s2, events = L.on_allocation(state, L.Decision(PID, "a", 1, "r1", "REFUSED", "breaker_open"), CFG, _live())
    assert [e.request.resource_id for e in _of(events, L.AllocationRequested)] == ["r2"]
    s3, events = L.on_allocation(s2, L.Decision(PID, "a", 1, "r2", "REFUSED", "missing_capabilities"), CFG, _live())
    assert not events and s3.runs["a"].status is L.RunStatus.UNPLACED and s3.runs["a"].due_ms == T0 + 1000
    queued, events = L.on_allocation(state, L.Decision(PID, "a", 1, "r1", "REFUSED", "insufficient_capacity",
                                                       waiting=True), CFG, _live())
    assert queued.runs["a"].status is L.RunStatus.WAITING and events[0].reason == "allocation_queued"
    later, events = L.on_tick(s3, PID, "DUE", CFG, _live(T0 + 1000))
    assert [e.request.resource_id for e in _of(events, L.AllocationRequested)] == ["r1"]


def test_a_grant_nobody_wants_is_given_back():
    state, _ = _start()
    _, events = _grant(state, "b")  # b was never requested
    assert [(e.resource_id, e.task_id) for e in _of(events, L.AllocationReleased)] == [("r1", "b")]


def test_failures_retry_with_growing_delays_then_replan_then_fail_and_done_work_stays():
    state, _ = _start(tasks=[{"task_id": "a", "name": "a", "duration_hours": 2, "capabilities": ["build"]},
                             {"task_id": "b", "name": "b", "duration_hours": 3, "capabilities": ["build"]}])
    state, _ = _grant(state, "a")
    state, _ = _fb(state, "a", "COMPLETED", T0 + 100)
    a_times = (state.plan.task("a").start_hours, state.plan.task("a").finish_hours)
    state, _ = _grant(state, "b")
    delays, now = [], T0 + 1000
    for attempt in (1, 2):
        state, events = _fb(state, "b", "FAILED", now, attempt=attempt, message="boom")
        run = state.runs["b"]
        assert run.status is L.RunStatus.RETRY and run.attempt == attempt + 1
        assert [e.outcome for e in _of(events, L.AllocationReleased)] == ["FAILURE"]
        delays.append(run.due_ms - now)
        early, ev = L.on_tick(state, PID, "DUE", CFG, _live(run.due_ms - 1))
        assert not _of(ev, L.AllocationRequested), "not before its backoff"
        now = run.due_ms
        state, ev = L.on_tick(state, PID, "DUE", CFG, _live(now))
        assert [e.request.attempt for e in _of(ev, L.AllocationRequested)] == [attempt + 1]
        state, ev = _grant(state, "b", attempt + 1, now=now)
        assert [e.attempt for e in _of(ev, L.TaskAssigned)] == [attempt + 1]
        with pytest.raises(PlanningError) as e:
            _fb(state, "b", "COMPLETED", now, attempt=attempt)
        assert e.value.reason == "stale_attempt"
    assert delays == [2000, 6000]
    state, events = _fb(state, "b", "FAILED", now + 1, attempt=3)
    (upd,) = _of(events, L.PlanUpdated)
    assert upd.trigger == "failed_after_retries" and "failed after 3 attempt(s)" in upd.plan.reason
    assert (upd.plan.task("a").start_hours, upd.plan.task("a").finish_hours) == a_times, "done work stays"
    assert [e.request.attempt for e in _of(events, L.AllocationRequested)] == [4]
    _check_records(events)
    for attempt in (4, 5, 6):
        state, _ = _grant(state, "b", attempt, now=now)
        state, events = _fb(state, "b", "FAILED", now, attempt=attempt)
        state, _ = L.on_tick(state, PID, "DUE", CFG, _live(now := now + 10 * H))
    assert state.status is L.PlanStatus.FAILED and "failed after 3 attempt(s)" in state.end_reason
    assert _of(events, L.PlanUpdated)[-1].status == "FAILED" and state.finished_at_ms is not None


def test_timeout_alerts_then_retries():
    state, _ = _start()
    state, _ = _grant(state, "a")
    deadline = state.runs["a"].deadline_ms
    same, events = L.on_tick(state, PID, "DUE", CFG, _live(deadline - 1))
    assert events[0].reason == "nothing_due"
    state, events = L.on_tick(state, PID, "DUE", CFG, _live(deadline))
    (alert,) = _of(events, L.RiskAlerted)
    assert alert.risk.category.value == "TIMELINE" and state.runs["a"].status is L.RunStatus.RETRY
    assert [e.outcome for e in _of(events, L.AllocationReleased)] == ["FAILURE"]


def test_lost_resource_reallocates_with_an_alert_or_replans_when_nobody_can_take_it():
    state, _ = _start()
    state, _ = _grant(state, "a")
    lost_r1 = (dataclasses.replace(R1, heartbeat_ms=T0 - 10 * 60_000), R2)
    moved, events = L.on_tick(state, PID, "RESOURCE_LOST", CFG, _live(T0, lost_r1), frozenset({"r1"}))
    assert [a.risk.category.value for a in _of(events, L.RiskAlerted)] == ["RESOURCE"]
    assert [(e.resource_id, e.attempt) for e in _of(events, L.AllocationReleased)] == [("r1", 1)]
    assert [(e.request.resource_id, e.request.attempt) for e in _of(events, L.AllocationRequested)] == [("r2", 2)]
    assert not _of(events, L.PlanUpdated)
    _check_records(events)
    alone = (dataclasses.replace(R1, healthy=False),)
    stuck, events = L.on_tick(state, PID, "RESOURCE_LOST", CFG, _live(T0, alone), frozenset({"r1"}))
    assert stuck.runs["a"].status is L.RunStatus.UNPLACED
    assert [u.trigger for u in _of(events, L.PlanUpdated)] == ["lost_capacity"]
    again, events = L.on_tick(moved, PID, "RESOURCE_LOST", CFG, _live(T0, lost_r1), frozenset({"r1"}))
    assert events[0].reason == "nothing_due", "a repeated loss report changes nothing"


def test_stop_holds_grants_resume_dispatches_cancel_releases():
    state, _ = _start()
    stopped, _ = L.on_control(state, L.Control("STOP", PID), CFG, _live())
    held, events = _grant(stopped, "a")
    assert not _of(events, L.TaskAssigned) and held.runs["a"].status is L.RunStatus.HELD
    resumed, events = L.on_control(held, L.Control("RESUME", PID), CFG, _live(T0 + 5))
    assert [(e.task.task.task_id, e.resource_id) for e in _of(events, L.TaskAssigned)] == [("a", "r1")]
    # everything halted: grants wait; a RESUME tick (everything resumed) sends them
    halted, events = _grant(state, "a", live=_live(halted=True))
    assert not _of(events, L.TaskAssigned) and L.held(halted)
    _, events = L.on_tick(halted, PID, "RESUME", CFG, _live(T0 + 7))
    assert len(_of(events, L.TaskAssigned)) == 1
    cancelled, events = L.on_control(resumed, L.Control("CANCEL", PID, "not needed", "bob"), CFG, _live(T0 + 9))
    assert cancelled.status is L.PlanStatus.CANCELLED and cancelled.end_reason == "not needed"
    assert [e.resource_id for e in _of(events, L.AllocationReleased)] == ["r1"]
    assert _of(events, L.PlanUpdated)[0].status == "CANCELLED"
    _, events = _grant(cancelled, "a")
    assert _of(events, L.AllocationReleased) and events[-1].reason == "stale_allocation"


def test_feedback_ids_dedup_progress_is_coalesced_and_completion_ends_the_plan():
    state, _ = _start()
    state, _ = _grant(state, "a")
    state, events = _fb(state, "a", "STARTED", T0 + 1, fid="f1")
    assert len(_of(events, L.PlanUpdated)) == 1
    state, events = _fb(state, "a", "PROGRESS", T0 + 2, fid="f2", progress_pct=50)
    assert not _of(events, L.PlanUpdated), "coalesced: within progress_interval_seconds"
    same, events = _fb(state, "a", "PROGRESS", T0 + 3, fid="f2", progress_pct=50)
    assert same is state and events[0].reason == "duplicate_feedback"
    state, events = _fb(state, "a", "PROGRESS", T0 + 20_000, fid="f3", progress_pct=60)
    (upd,) = _of(events, L.PlanUpdated)
    assert upd.figures.progress_pct == pytest.approx(100 * 2 * 0.6 / 5)
    state, events = _fb(state, "a", "COMPLETED", T0 + 20_001, fid="f4", actual_hours=2.5)
    assert state.runs["a"].actual_cost == 2.5 and _of(events, L.PlanUpdated)[-1].figures.progress_pct == 40.0
    state, _ = _grant(state, "b")
    state, events = _fb(state, "b", "COMPLETED", T0 + 30_000, fid="f5", actual_hours=3)
    last = codec.records(events)[-1].value
    assert state.status is L.PlanStatus.COMPLETED and last["status"] == "COMPLETED" and last["progress_pct"] == 100
    assert last["actual_cost"] == 2.5 * 1 + 3 * 1
    assert _decoded(state_codec.encode(state)) == state


def test_budget_hold_alerts_and_resume_releases_it():
    dear = (_res("r9", cost=1000.0),)   # 5 h at 1000/h = 5000 > 1000 (the planner's own estimate fits)
    state, events = _start(budget=1000.0, live=_live(resources=dear))
    assert state.plan.approval.value == "AUTO_APPROVED" and state.hold and not _of(events, L.AllocationRequested)
    assert [a.risk.title for a in _of(events, L.RiskAlerted)] == ["Plan held: over budget"]
    resumed, events = L.on_control(state, L.Control("RESUME", PID), CFG, _live(resources=dear))
    assert not resumed.hold and [e.request.task_id for e in _of(events, L.AllocationRequested)] == ["a"]


def test_drift_beyond_the_threshold_replans_once_per_interval():
    cfg = dataclasses.replace(CFG, enable_continuous_replanning=True, replanning_interval_minutes=1,
                              replan_variance_hours=0.5)
    state, _ = L.on_goal(None, codec.goal_from_record(_goal_rec()), {}, cfg, received_at_ms=T0, live=_live())
    state, _ = L.on_allocation(state, L.Decision(PID, "a", 1, "r1", "GRANTED"), cfg, _live())
    now = T0 + 3 * H   # a (0-2 h) still not done at 3 h: behind schedule
    state, events = L.on_tick(state, PID, "DUE", cfg, _live(now))
    assert [u.trigger for u in _of(events, L.PlanUpdated)] == ["drift"]
    assert state.plan.task("a").start_hours == 0.0, "running work keeps its times"
    _, events = L.on_tick(state, PID, "DUE", cfg, _live(now + 1000))
    assert not _of(events, L.PlanUpdated), "at most one check per replanning_interval_minutes"


def test_managed_state_round_trips():
    state, _ = _start()
    state, _ = _grant(state, "a")
    state, _ = L.on_control(state, L.Control("STOP", PID), CFG, _live())
    back = _decoded(state_codec.encode(state, CFG))
    assert back == state
    h = state_codec.header(state_codec.encode(state, CFG))
    assert h["u"] == ["r1"] and h["n"] == state.runs["a"].deadline_ms


def _req(plan, task, attempt=1, rid="r1", units=1.0):
    return A.AllocationRequest(plan, task, attempt, rid, {"agents": units}, ("build",))


def test_ledger_owner_books_releases_and_its_breaker_opens_after_failures():
    cfg = dataclasses.replace(CFG, breaker_failure_threshold=2, breaker_cooldown_seconds=60)
    s, d = A.on_request(None, None, _req("p", "x"), T0, cfg)
    assert d[0].reason == "unknown_resource"
    s, d = A.on_request(None, R1, _req("p", "x"), T0, cfg)
    s, d2 = A.on_request(s, R1, _req("p", "y"), T0, cfg)
    s, d3 = A.on_request(s, R1, _req("q", "z"), T0, cfg)
    assert [type(x).__name__ for x in d + d2 + d3] == ["Granted", "Granted", "Refused"] and d3[0].waiting
    s, out = A.on_release(s, R1, ("p", "x", 1), "FAILURE", T0 + 1, cfg)
    assert [type(x).__name__ for x in out] == ["Released", "Granted"]      # z gets x's unit
    s, out = A.on_release(s, R1, ("p", "y", 1), "FAILURE", T0 + 2, cfg)
    assert s.breaker.state is BreakerState.OPEN
    s, d = A.on_request(s, R1, _req("p", "y", 2), T0 + 3, cfg)
    assert d[0].reason == "breaker_open" and not d[0].waiting
    later = dataclasses.replace(R1, heartbeat_ms=T0 + 2 + 60_000)
    s, d = A.on_request(s, later, _req("p", "y", 2), T0 + 2 + 60_000, cfg)   # half-open: one trial
    assert isinstance(d[0], A.Granted)
    data = state_codec.encode_ledger(s)
    state_codec.forget()   # decode the bytes, not the ledger cached when they were encoded
    assert state_codec.decode_ledger(data, later) == s


def _full_release(ledger, key, now_ms):
    """What release decided before its fast path: drop the key, re-decide everything."""
    rest = A.ResourceLedger(ledger.resource, dict((k, b) for k, b in ledger.bookings.items() if k != key),
                            tuple(q for q in ledger.waiting if q.key != key))
    return rest.allocate((), now_ms)


def test_release_without_waiters_decides_what_the_full_allocation_would():
    big = _res("r1", 50.0)
    s = None
    for i in range(20):
        s, _ = A.on_request(s, big, _req("p", f"t{i}", 1 + i % 2), T0 + i, CFG)
    for key in [("p", "t3", 2), ("p", "t4", 1), ("p", "nope", 1)]:
        fast, d = s.ledger.release(*key, T0 + 50)
        full, d_full = _full_release(s.ledger, key, T0 + 50)
        assert (dict(fast.bookings), fast.waiting, d) == (dict(full.bookings), full.waiting, d_full)
        s = dataclasses.replace(s, ledger=fast)


def test_ledger_bytes_are_what_orjson_writes_and_bookings_are_encoded_once():
    import orjson
    big = _res("r1", 50.0)
    s, seen = None, []
    for i in range(6):
        s, _ = A.on_request(s, big, _req("p", f"t{i}"), T0 + i, CFG)
        seen.append(s)
    s, _ = A.on_release(s, big, ("p", "t2", 1), "SUCCESS", T0 + 9, CFG)
    seen.append(s)
    for st in seen:   # in order: each encode reuses the previous ledger's booking bytes
        b = st.breaker
        want = orjson.dumps({"b": [[state_codec._request(k.request), k.booked_at_ms] for k in st.ledger.bookings.values()],
                             "w": [state_codec._request(q) for q in st.ledger.waiting],
                             "br": [b.state.value, b.failures, b.opened_at_ms, b.trial_in_flight,
                                    [list(t) for t in b.failed]]})
        assert state_codec.encode_ledger(st) == want
    data = state_codec.encode_ledger(s)
    state_codec.forget()
    assert state_codec.decode_ledger(data, big) == s
    failing, _ = A.on_request(None, big, _req("p", "f"), T0, CFG)
    failing, _ = A.on_release(failing, big, ("p", "f", 1), "FAILURE", T0 + 1, CFG)
    assert failing.breaker.failed == (("p", "f"),)
    data = state_codec.encode_ledger(failing)
    state_codec.forget()
    assert state_codec.decode_ledger(data, big) == failing
    # a ledger stored before the breaker named its tasks (4 items) still reads
    old = orjson.loads(data)
    old["br"] = old["br"][:4]
    state_codec.forget()
    assert state_codec.decode_ledger(orjson.dumps(old), big).breaker.failed == ()


def test_decision_records_carry_what_was_booked_and_go_back_to_the_plan():
    s, d = A.on_request(None, R1, _req("p", "x"), T0, CFG)
    s, d2 = A.on_request(s, R1, _req("p", "x", 2), T0, CFG)   # a later attempt replaces the earlier booking
    assert [type(x).__name__ for x in d2] == ["Released", "Granted"]
    outs = codec.decision_records(d2, s.ledger, R1, T0)
    assert [(o.topic, o.key, o.value["decision"]) for o in outs] == [
        (T.RESOURCES_ALLOCATIONS.name, "r1", "RELEASED"), (T.RESOURCES_ALLOCATIONS.name, "r1", "GRANTED"),
        (T.ALLOCATION_DECISIONS.name, "p", "GRANTED")]
    assert outs[1].value["booked"] == {"agents": 1.0} and outs[1].value["capacity"] == {"agents": 2.0}
    _check_records_outs(outs)


def _check_records_outs(outs):
    for o in outs:
        assert serde(o.topic).decode(serde(o.topic).encode(o.value)) == o.value


def test_a_request_without_decision_is_asked_again_of_the_same_ledger():
    state, _ = _start()
    due = state.runs["a"].due_ms
    _, events = L.on_tick(state, PID, "DUE", CFG, _live(due - 1))
    assert not _of(events, L.AllocationRequested)
    again, events = L.on_tick(state, PID, "DUE", CFG, _live(due))
    assert [(e.request.resource_id, e.request.attempt) for e in _of(events, L.AllocationRequested)] == [("r1", 1)]
    assert again.runs["a"].due_ms > due


def test_cancelled_feedback_of_a_stopped_plan_is_no_failure_and_runs_again_on_resume():
    """An executor interrupted an attempt on an emergency stop (CANCELLED): its booking goes
    back without a breaker outcome, the task is not counted as failed, a new attempt is
    proposed and granted but HELD while the plan is stopped, and goes out on RESUME."""
    state, _ = _start()
    running, _ = _grant(state, "a")
    running, _ = _fb(running, "a", "STARTED", T0 + 1, attempt=1, fid="s1")
    stopped, _ = L.on_control(running, L.Control("STOP", PID), CFG, _live(T0 + 2))
    cancelled, events = _fb(stopped, "a", "CANCELLED", T0 + 3, attempt=1, fid="c1", message="cancelled: stop")
    _check_records(events)
    assert [(e.resource_id, e.attempt, e.outcome) for e in _of(events, L.AllocationReleased)] == [("r1", 1, "")]
    run = cancelled.runs["a"]
    assert run.attempt == 2 and run.failures == 0 and run.status is L.RunStatus.WAITING
    assert [(e.request.task_id, e.request.attempt) for e in _of(events, L.AllocationRequested)] == [("a", 2)]
    assert not _of(events, L.TaskAssigned) and not _of(events, L.PlanUpdated)
    held, events = _grant(cancelled, "a", attempt=2, now=T0 + 4)
    assert held.runs["a"].status is L.RunStatus.HELD and not _of(events, L.TaskAssigned)
    resumed, events = L.on_control(held, L.Control("RESUME", PID), CFG, _live(T0 + 5))
    assert [(e.task.task.task_id, e.attempt) for e in _of(events, L.TaskAssigned)] == [("a", 2)]
    with pytest.raises(PlanningError) as err:   # the interrupted attempt says nothing more
        _fb(resumed, "a", "COMPLETED", T0 + 6, attempt=1)
    assert err.value.reason == "stale_attempt"


def _decoded(data: bytes):
    """The bytes decoded, not the state cached when they were encoded."""
    state_codec.forget()
    return state_codec.decode(data)
