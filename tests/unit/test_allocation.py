"""Allocation: capabilities, capacity never exceeded, priority order, determinism, cost and budget hold."""
from hypothesis import example, given, settings, strategies as st

from processors.allocation import (AllocationRequest, Granted, Refused, Resource, ResourceLedger, budget_hold,
                                   choose_resource, demand, is_lost, plan_cost_estimate, priority_key,
                                   request_for, task_cost)
from processors.config import PlanningConfig
from processors.model import Estimate, Plan, Priority, ScheduledTask, Task
from processors.retry import Breaker, BreakerState

NOW = 1_700_000_000_000
CFG = PlanningConfig()


def _res(rid="r1", kind="gpu", caps=("cuda",), capacity=None, free=None, cost=1.0, healthy=True, hb=NOW):
    capacity = {"gpu": 4.0} if capacity is None else capacity
    return Resource(rid, kind, frozenset(caps), capacity, dict(capacity) if free is None else free, cost, healthy, hb)


def _req(task="t", plan="p", units=1.0, prio=Priority.MEDIUM, slack=0.0, attempt=1, rid="r1", caps=("cuda",),
         hours=2.0):
    return AllocationRequest(plan, task, attempt, rid, {"gpu": units}, caps, prio, slack, hours)


def _task(tid="t", caps=("cuda",), resources=None, h=2.0):
    return Task(tid, tid, Estimate(h, h, h), resources={"gpu": 1.0} if resources is None else resources,
                capabilities=caps)


def test_lost_after_heartbeat_timeout():
    r = _res(hb=NOW - 30_000)
    assert not is_lost(r, NOW, 30_000) and is_lost(r, NOW + 1, 30_000)


def test_choose_resource_capabilities_health_breaker_capacity_then_cheapest():
    t = _task(caps=("cuda",))
    rs = [_res("a", cost=5.0), _res("b", cost=1.0, caps=()),            # b lacks cuda
          _res("c", cost=2.0, healthy=False), _res("d", cost=2.0, hb=NOW - 60_000),   # unhealthy, lost
          _res("e", cost=3.0, free={"gpu": 0.5}), _res("f", cost=3.0), _res("g", cost=3.0)]
    assert choose_resource(t, rs, NOW, {}, CFG).resource_id == "f"      # cheapest usable, then id
    open_f = Breaker(BreakerState.OPEN, 3, NOW - 1000)
    assert choose_resource(t, rs, NOW, {"f": open_f}, CFG).resource_id == "g"
    # after the 60 s cool-down the breaker is half-open: f is a candidate again
    cooled = Breaker(BreakerState.OPEN, 3, NOW - 60_000)
    assert choose_resource(t, rs, NOW, {"f": cooled}, CFG).resource_id == "f"
    assert choose_resource(_task(caps=("tpu",)), rs, NOW, {}, CFG) is None


def test_task_without_units_takes_one_unit_of_the_resource_kind():
    assert demand(_task(resources={}), _res(kind="agents")) == {"agents": 1.0}


def test_ledger_never_exceeds_capacity_and_requires_capabilities():
    led = ResourceLedger(_res(capacity={"gpu": 4.0}))
    led, ds = led.allocate([_req("a", units=3), _req("b", units=2), _req("c", units=1), _req("d", caps=("tpu",))], NOW)
    got = {d.request.task_id: d for d in ds}
    assert isinstance(got["a"], Granted) and isinstance(got["c"], Granted)     # first fit: c goes ahead of b
    assert got["b"] == Refused(got["b"].request, "insufficient_capacity", waiting=True)
    assert got["d"].reason == "missing_capabilities" and not got["d"].waiting
    assert led.booked() == {"gpu": 4.0} and [q.task_id for q in led.waiting] == ["b"]
    led, ds = led.release("p", "a", 1, NOW + 1)                                 # b now fits
    assert [d.request.task_id for d in ds] == ["b"] and isinstance(ds[0], Granted)
    assert led.booked() == {"gpu": 3.0} and led.waiting == ()


def test_ledger_refuses_lost_unhealthy_too_big_and_wrong_resource():
    led = ResourceLedger(_res(hb=NOW - 31_000))
    assert led.allocate([_req()], NOW)[1][0].reason == "resource_lost"
    assert ResourceLedger(_res(healthy=False)).allocate([_req()], NOW)[1][0].reason == "resource_unhealthy"
    assert ResourceLedger(_res()).allocate([_req(units=5)], NOW)[1][0].reason == "exceeds_capacity"
    assert ResourceLedger(_res()).allocate([_req(rid="other")], NOW)[1][0].reason == "wrong_resource"


def test_priority_then_slack_then_ids():
    reqs = [_req("x", "p2", 2, Priority.LOW), _req("y", "p3", 2, Priority.HIGH, slack=5.0),
            _req("z", "p1", 2, Priority.HIGH, slack=1.0), _req("w", "p0", 2, Priority.CRITICAL, slack=9.0)]
    assert [q.task_id for q in sorted(reqs, key=priority_key)] == ["w", "z", "y", "x"]
    led, ds = ResourceLedger(_res(capacity={"gpu": 4.0})).allocate(reqs, NOW)
    assert sorted(d.request.task_id for d in ds if isinstance(d, Granted)) == ["w", "z"]
    # the waiting ones are granted in priority order as capacity comes back
    led, ds = led.release("p0", "w", 1, NOW)
    assert [d.request.task_id for d in ds] == ["y"]


def test_idempotent_repeat_and_later_attempt_replaces_earlier():
    led, _ = ResourceLedger(_res()).allocate([_req("a", units=3)], NOW)
    led2, ds = led.allocate([_req("a", units=3)], NOW)
    assert isinstance(ds[0], Granted) and led2.booked() == {"gpu": 3.0}
    led3, ds = led2.allocate([_req("a", units=3, attempt=2)], NOW)
    assert isinstance(ds[0], Granted) and led3.booked() == {"gpu": 3.0}
    assert list(led3.bookings) == [("p", "a", 2)]


def test_a_later_attempt_replaces_an_earlier_waiting_request():
    led, _ = ResourceLedger(_res()).allocate([_req("a", units=4), _req("b", units=2)], NOW)
    led, ds = led.allocate([_req("b", units=2, attempt=2)], NOW)
    assert [q.key for q in led.waiting] == [("p", "b", 2)] and ds[0].waiting
    led, ds = led.allocate([_req("b", units=2, attempt=1)], NOW)          # a replayed older attempt
    assert ds[0].reason == "stale_attempt" and [q.key for q in led.waiting] == [("p", "b", 2)]


def test_release_plan_and_withdraw():
    led, _ = ResourceLedger(_res()).allocate([_req("a", "p1", 4), _req("b", "p2", 4), _req("c", "p3", 4)], NOW)
    assert [q.plan_id for q in led.waiting] == ["p2", "p3"]
    led = led.withdraw("p2")
    led, ds = led.release_plan("p1", NOW)
    assert [d.request.plan_id for d in ds] == ["p3"] and led.booked() == {"gpu": 4.0}


def test_cost_estimate_and_budget_hold():
    a, b = _task("a", h=2.0), _task("b", h=3.0)
    plan = Plan("p", "g", 1, "explicit", tuple(ScheduledTask(t, 0, t.duration_hours, 0, 0, 0, True) for t in (a, b)),
                ("a", "b"), 5.0)
    gpu = _res(cost=10.0)
    assert task_cost(2.0, gpu) == 20.0
    # a on gpu: 2 h x 10/h = 20; b reported an actual cost of 7 -> 27
    assert plan_cost_estimate(plan, {"a": gpu}, CFG, actual_costs={"b": 7.0}) == 27.0
    # b unallocated: planner rates: 3 h x (base 50 + 1 gpu x 2.5) = 157.5 -> 177.5
    assert plan_cost_estimate(plan, {"a": gpu}, CFG) == 177.5
    assert budget_hold(177.5, None) is None and budget_hold(177.5, 200.0) is None
    assert "exceeds the budget 100.00" in budget_hold(177.5, 100.0)
    q = request_for(plan, "b", 1, gpu, Priority.HIGH, NOW)
    assert q.resource_id == "r1" and dict(q.demand) == {"gpu": 1.0} and q.hours == 3.0


_op = st.one_of(
    st.tuples(st.just("req"), st.integers(0, 5), st.integers(0, 3), st.floats(0.5, 4.0), st.integers(1, 3),
              st.sampled_from(list(Priority)), st.floats(0, 10)),
    st.tuples(st.just("rel"), st.integers(0, 5), st.integers(0, 3), st.integers(1, 3)),
    st.tuples(st.just("cap"), st.floats(0.0, 8.0)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_op, min_size=1, max_size=4), max_size=25))
@example([[("req", 0, 0, 1.0, 1, Priority.LOW, 0.0)],   # a repeat of attempt 1 beside attempt 2 was
          [("req", 0, 0, 1.0, 1, Priority.LOW, 0.0), ("req", 0, 0, 1.0, 2, Priority.LOW, 0.0)]])  # granted, unbooked
def test_capacity_never_exceeded_over_any_sequence(batches):
    led = ResourceLedger(_res(capacity={"gpu": 4.0}))
    for batch in batches:
        reqs = []
        for op in batch:
            if op[0] == "req":
                _, p, t, u, att, prio, slack = op
                reqs.append(_req(f"t{t}", f"p{p}", u, prio, slack, att))
            elif op[0] == "rel":
                _, p, t, att = op
                led, _ = led.release(f"p{p}", f"t{t}", att, NOW)
            else:
                led = led.with_resource(_res(capacity={"gpu": op[1]}))
        before = set(led.bookings)
        led, ds = led.allocate(reqs, NOW)
        # a new booking is only ever made within capacity (a shrunk announcement may leave
        # older bookings above it, but then nothing new is granted until enough is released)
        if set(led.bookings) - before:
            assert led.booked()["gpu"] <= led.resource.capacity["gpu"] + 1e-9
        assert all(k in led.bookings for k in {d.request.key for d in ds if isinstance(d, Granted)})
        assert not set(led.bookings) & {q.key for q in led.waiting}
        assert {q.key for q in reqs} <= {d.request.key for d in ds}          # every request is answered


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.floats(0.5, 3.0),
                          st.sampled_from(list(Priority)), st.floats(0, 5)), max_size=12), st.randoms())
def test_decisions_do_not_depend_on_arrival_order(specs, rnd):
    reqs = list({(p, t): _req(f"t{t}", f"p{p}", u, pr, s) for p, t, u, pr, s in specs}.values())
    shuffled = reqs[:]
    rnd.shuffle(shuffled)
    l1, d1 = ResourceLedger(_res()).allocate(reqs, NOW)
    l2, d2 = ResourceLedger(_res()).allocate(shuffled, NOW)
    assert set(l1.bookings) == set(l2.bookings) and l1.waiting == l2.waiting
    assert {d.request.key for d in d1 if isinstance(d, Granted)} == {d.request.key for d in d2 if isinstance(d, Granted)}
