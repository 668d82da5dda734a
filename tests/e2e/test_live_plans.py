"""Live plans on the real broker with two planner workers: resources announced, goals
planned, allocated by the resources' ledgers, dispatched, driven to COMPLETED by simulated
executors; retries with growing delays, a replan after retries, a silent resource's tasks
reallocated with an alert, no resource ever over-allocated, emergency stop and resume.
Every resource a test announces is tombstoned at its end (the broker is shared)."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from processors.ids import plan_id
from streams import codec
from streams.simulate import Simulation, resource_record
from tests.kafka_helpers import collect, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ENV = dict(PLANNING_REFINE_BUDGET_SECONDS=0, PLANNING_RETRY_BASE_SECONDS=0.5, PLANNING_RETRY_BACKOFF_FACTOR=2,
           PLANNING_MAX_TASK_ATTEMPTS=3, PLANNING_RESOURCE_HEARTBEAT_TIMEOUT_SECONDS=3,
           PLANNING_PROGRESS_INTERVAL_SECONDS=0.5, PLANNING_ENABLE_CONTINUOUS_REPLANNING="false")


def _goal(goal_id: str, cap: str | list[str], tasks: list[tuple[str, float, list[str]]]) -> dict:
    caps = [cap] if isinstance(cap, str) else cap
    return {"goal_id": goal_id, "title": f"live {goal_id}", "created_at_ms": int(time.time() * 1000),
            "tasks": [{"task_id": t, "name": t, "duration_hours": h, "depends_on": deps, "capabilities": caps}
                      for t, h, deps in tasks]}


def _two_workers(planner_stack, kafka_bootstrap, run: str):
    planner_stack(**ENV)
    planner_stack(**ENV)
    warm = {"goal_id": f"warm-{run}", "title": "warm", "created_at_ms": int(time.time() * 1000),
            "tasks": [{"task_id": "w", "name": "w", "duration_hours": 1}]}
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(warm["goal_id"], warm)])
    assert collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(warm["goal_id"]), count=1,
                   timeout=120)


def _no_over_allocation(bootstrap: str, rids: set[str]) -> int:
    """Replays every allocation record of `rids` in order: booked never exceeds capacity."""
    recs = collect(bootstrap, T.RESOURCES_ALLOCATIONS.name, lambda r: r.key in rids, count=10**9, timeout=8)
    booked: dict[str, dict[tuple, dict]] = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        v = r.value
        assert all(v["booked"].get(k, 0.0) <= cap + 1e-9 for k, cap in v["capacity"].items()), v
        held = booked.setdefault(v["resource_id"], {})
        key = (v["plan_id"], v["task_id"], v["attempt"])
        if v["decision"] == "GRANTED":
            held[key] = v["demand"]
        elif v["decision"] == "RELEASED":
            held.pop(key, None)
        for k, cap in v["capacity"].items():
            assert sum(d.get(k, 0.0) for d in held.values()) <= cap + 1e-9, f"{v['resource_id']} over-allocated"
    return len(recs)


def _explain(bootstrap: str, seen, stuck: set[str]) -> None:
    """What happened to plans that did not end (printed when the test fails)."""
    for pid in sorted(stuck):
        print("STUCK", pid, [(a["task"]["task_id"], a["attempt"], a["assigned_to"]) for a in seen.assignments
                             if a["plan_id"] == pid])
        for topic in (T.PLANS_CREATED.name, T.ALLOCATION_DECISIONS.name, T.PLANS_TICK.name,
                      T.EXECUTION_FEEDBACK.dlq, T.ALLOCATION_DECISIONS.dlq, T.PLANS_TICK.dlq, T.GOALS_BY_PLAN.dlq):
            for r in collect(bootstrap, topic, lambda r: r.key == pid, count=10**9, timeout=3):
                v = r.value or {}
                print(" ", topic, r.headers.get("chimera.dlq.reason", ""), {k: v.get(k) for k in (
                    "task_id", "attempt", "decision", "resource_id", "reason", "kind", "resources", "version")})
        for topic in (T.RESOURCES_ALLOCATIONS.name, T.ALLOCATION_REQUESTS.name):
            for r in collect(bootstrap, topic, lambda r: r.value and r.value["plan_id"] == pid, count=10**9,
                             timeout=3):
                print(" ", topic, r.key, r.partition, r.offset, {k: r.value.get(k) for k in (
                    "kind", "decision", "task_id", "attempt", "reason", "waiting", "booked")})
    if stuck:
        for r in collect(bootstrap, T.ALLOCATION_REQUESTS.dlq, lambda r: True, count=10**9, timeout=3):
            print("  requests.dlq", r.key, r.headers.get("chimera.dlq.reason"), r.headers.get("chimera.dlq.detail"))


def test_live_plans_allocated_dispatched_retried_replanned_reallocated(kafka_bootstrap, planner_stack):
    run = uuid.uuid4().hex[:8]
    cap = f"build-{run}"
    _two_workers(planner_stack, kafka_bootstrap, run)
    silent_rid = f"r-silent-{run}"
    sure = f"sure-{run}"   # the retried tasks never land on the resource that goes silent
    resources = [resource_record(f"r-cheap-{run}", capabilities=[cap, sure], agents=2, cost=1.0),
                 resource_record(f"r-other-{run}", capabilities=[cap, sure], agents=2, cost=2.0),
                 resource_record(silent_rid, capabilities=[cap], agents=1, cost=0.5)]
    goals = [_goal(f"ok-{i}-{run}", cap, [("a", 1, []), ("b", 2, ["a"]), ("c", 1, [])]) for i in range(3)]
    flaky = _goal(f"flaky-{run}", [cap, sure], [("f", 1, [])])
    bad = _goal(f"bad-{run}", [cap, sure], [("x", 1, [])])
    pids = {plan_id(g["goal_id"]): g for g in goals + [flaky, bad]}
    flaky_pid, bad_pid = plan_id(flaky["goal_id"]), plan_id(bad["goal_id"])

    def script(pid, tid, attempt, rid):
        if rid == silent_rid:
            return "silent"
        if pid == bad_pid or (pid == flaky_pid and attempt <= 2):
            return "fail"
        return "ok"

    async def go():
        async with Simulation(kafka_bootstrap, resources, script) as sim:
            def went_silent(a):
                if a["assigned_to"] == silent_rid:
                    sim.silent.add(silent_rid)
            sim.on_assignment = went_silent
            await asyncio.sleep(1.5)   # both workers' global tables have the resources
            for g in goals + [flaky, bad]:
                await sim.send(T.GOALS_CREATED.name, g["goal_id"], g)
            try:
                return await sim.until(set(pids), timeout_s=60)
            finally:
                await sim.tombstone()
    seen = asyncio.run(go())

    _explain(kafka_bootstrap, seen, {p for p in pids if seen.status.get(p) not in ("COMPLETED", "FAILED")})
    assert {p: seen.status.get(p) for p in pids} == {**{p: "COMPLETED" for p in pids}, bad_pid: "FAILED"}
    by_attempt = [(a["plan_id"], a["task"]["task_id"], a["attempt"]) for a in seen.assignments]
    assert len(by_attempt) == len(set(by_attempt)), "tasks.assigned exactly once per attempt"
    assert all(a["assigned_to"] and a["deadline_ms"] > a["assigned_at_ms"] for a in seen.assignments)
    for pid in pids:   # every completed plan ended at 100 %, its progress reported on the way
        if seen.status[pid] == "COMPLETED":
            last = seen.updates[pid][-1]
            assert last["progress_pct"] == pytest.approx(100.0) and last["trigger"] == "completed"
            assert last["actual_cost"] > 0

    flaky_runs = sorted((a["attempt"], a["_ts"]) for a in seen.assignments if a["plan_id"] == flaky_pid)
    assert [n for n, _ in flaky_runs] == [1, 2, 3]
    gap1, gap2 = flaky_runs[1][1] - flaky_runs[0][1], flaky_runs[2][1] - flaky_runs[1][1]
    assert gap1 >= 500 and gap2 > gap1 + 300, f"backoff grows: {gap1} ms then {gap2} ms"

    triggers = [u["trigger"] for u in seen.updates[bad_pid]]
    assert "failed_after_retries" in triggers and triggers[-1] == "failed"
    assert max(a["attempt"] for a in seen.assignments if a["plan_id"] == bad_pid) == 6   # 3, replan, 3 more

    on_silent = {(a["plan_id"], a["task"]["task_id"]) for a in seen.assignments if a["assigned_to"] == silent_rid}
    assert on_silent, "the cheapest resource got work before it went silent"
    for pid, tid in on_silent:
        later = [a for a in seen.assignments if (a["plan_id"], a["task"]["task_id"]) == (pid, tid)
                 and a["assigned_to"] != silent_rid]
        assert later, f"{tid} of {pid} was reallocated"
    lost_alerts = [a for a in seen.alerts if a["risk"]["category"] == "RESOURCE" and silent_rid in a["risk"]["title"]]
    assert lost_alerts, "a RESOURCE alert names the silent resource"

    assert _no_over_allocation(kafka_bootstrap, {r["resource_id"] for r in resources}) > 0


def test_emergency_stop_halts_assignments_within_a_second_and_resume_restarts(kafka_bootstrap, planner_stack):
    run = uuid.uuid4().hex[:8]
    cap = f"build-{run}"
    _two_workers(planner_stack, kafka_bootstrap, run)
    resources = [resource_record(f"r-stop-{run}", capabilities=[cap], agents=4, cost=1.0)]
    goals = [_goal(f"stop-{i}-{run}", cap, [("a", 1, []), ("b", 1, ["a"])]) for i in range(4)]
    pids = {plan_id(g["goal_id"]) for g in goals}
    now = lambda: int(time.time() * 1000)  # noqa: E731

    async def go():
        async with Simulation(kafka_bootstrap, resources, lambda *a: "ok") as sim:
            await asyncio.sleep(1.5)
            stop = codec.control_record("STOP", None, reason="test", by="pytest", at_ms=now())
            await sim.send(stop.topic, stop.key, stop.value)
            stopped_at = time.time()
            await asyncio.sleep(1.0)
            for g in goals:
                await sim.send(T.GOALS_CREATED.name, g["goal_id"], g)
            await sim.until(pids, done=lambda r: False, timeout_s=4)   # 4 s: nothing may go out
            during = list(sim.run.assignments)
            resume = codec.control_record("RESUME", None, by="pytest", at_ms=now())
            await sim.send(resume.topic, resume.key, resume.value)
            resumed_at = time.time()
            try:
                seen = await sim.until(pids, timeout_s=60)
            finally:
                await sim.tombstone()
            return stopped_at, during, resumed_at, seen
    stopped_at, during, resumed_at, seen = asyncio.run(go())
    assert during == [], "no assignment after an emergency stop"
    assert all(seen.status.get(p) == "COMPLETED" for p in pids), seen.status
    first = min(a["_ts"] for a in seen.assignments) / 1000
    assert first >= resumed_at - 0.05 and first - resumed_at < 5, "resume restarts the held tasks"
