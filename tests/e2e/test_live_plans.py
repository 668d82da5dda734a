"""Live plans on the real broker with two planner workers: resources announced, goals
planned, allocated by the resources' ledgers, dispatched, driven to COMPLETED by simulated
executors; retries with growing delays, a replan after retries, a silent resource's tasks
reallocated with an alert, no resource ever over-allocated, emergency stop and resume.
Every resource a test announces is tombstoned at its end (the broker is shared)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from processors.ids import plan_id
from streams import codec
from streams.simulate import ENDED, Simulation, resource_record
from tests.kafka_helpers import collect, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]

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
    # lower bounds only (a loaded machine is late, never early): the second wait is the doubled one
    assert gap1 >= 500 and gap2 >= 1000, f"backoff grows: {gap1} ms then {gap2} ms"

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


def _status_rows(bootstrap: str, pid: str) -> tuple[str, dict[str, dict]]:
    """`chimera status PID` run as a user would (its own process), its table parsed by task."""
    out = subprocess.run([sys.executable, "-m", "streams.cli", "status", pid, "--idle", "1.5"],
                         env={**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "COLUMNS": "200"},
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr + out.stdout
    cols = ("task", "start", "finish", "state", "pct", "attempt", "resource", "deadline")
    rows = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == len(cols) and cells[0] not in ("task", ""):
            rows[cells[0]] = dict(zip(cols, cells))
    return out.stdout, rows


def test_status_prints_each_tasks_state_attempt_and_allocation(kafka_bootstrap, planner_stack):
    """`chimera status` against a live worker: a completed task, one failed once then completed
    on its second attempt, one running (STARTED, 50 %), one not handed out yet; each with the
    resource its current attempt was granted (checked against tasks.assigned and the ledger's
    GRANTED records)."""
    run = uuid.uuid4().hex[:8]
    cap = f"status-{run}"
    planner_stack(**ENV)
    resources = [resource_record(f"r-st1-{run}", capabilities=[cap], agents=2, cost=1.0),
                 resource_record(f"r-st2-{run}", capabilities=[cap], agents=2, cost=2.0)]
    goal = _goal(f"status-{run}", cap, [("a", 1, []), ("b", 2, ["a"]), ("c", 1, []), ("d", 1, ["b"])])
    pid = plan_id(goal["goal_id"])

    def script(p, tid, attempt, rid):
        return {"b": "hang", "c": "fail" if attempt == 1 else "ok"}.get(tid, "ok")

    def settled(r):   # on execution.feedback: a done, b running (50 %), c done on its second attempt
        sent = {(f["task_id"], f["attempt"], f["status"]) for f in r.reported if f["plan_id"] == pid}
        return {("a", 1, "COMPLETED"), ("b", 1, "PROGRESS"), ("c", 2, "COMPLETED")} <= sent

    async def go():
        async with Simulation(kafka_bootstrap, resources, script) as sim:
            try:
                await asyncio.sleep(1.5)
                await sim.send(T.GOALS_CREATED.name, goal["goal_id"], goal)
                seen = await sim.until({pid}, done=settled, timeout_s=60)
                text, rows = await asyncio.to_thread(_status_rows, kafka_bootstrap, pid)
                return seen, text, rows
            finally:
                await sim.tombstone()
    seen, text, rows = asyncio.run(go())
    print(text)
    latest = {}
    for a in sorted(seen.assignments, key=lambda a: a["attempt"]):
        if a["plan_id"] == pid:
            latest[a["task"]["task_id"]] = a
    assert set(latest) == {"a", "b", "c"}, "d waits for b"
    assert {t: (r["state"], r["attempt"]) for t, r in rows.items()} == {
        "a": ("COMPLETED", "1"), "b": ("STARTED", "1"), "c": ("COMPLETED", "2"), "d": ("-", "")}
    assert rows["b"]["pct"] == "50" and rows["a"]["pct"] == "100"
    assert {t: r["resource"] for t, r in rows.items()} == {**{t: a["assigned_to"] for t, a in latest.items()},
                                                           "d": ""}
    granted = {(r.value["task_id"], r.value["attempt"]): r.value["resource_id"] for r in collect(
        kafka_bootstrap, T.RESOURCES_ALLOCATIONS.name,
        lambda r: r.value and r.value["plan_id"] == pid and r.value["decision"] == "GRANTED", count=4, timeout=10)}
    assert {t: rows[t]["resource"] for t in latest} == {t: granted[(t, a["attempt"])] for t, a in latest.items()}
    assert all(r["resource"].startswith(("r-st1-", "r-st2-")) for t, r in rows.items() if t != "d")
    assert f"{pid}" in text and "status=ACTIVE" in text and "progress " in text


def test_stopping_one_plan_halts_its_assignments_within_a_second_while_another_goes_on(
        kafka_bootstrap, planner_stack):
    """A per-plan STOP on control.commands: the stopped plan gets no new assignment from one
    second after the stop, the other plan keeps being dispatched and completes; a RESUME of
    the plan restarts it and it completes."""
    run = uuid.uuid4().hex[:8]
    cap = f"pstop-{run}"
    planner_stack(**ENV)
    resources = [resource_record(f"r-pstop-{run}", capabilities=[cap], agents=4, cost=1.0)]
    chain = [(f"t{i}", 1, [f"t{i - 1}"] if i else []) for i in range(6)]
    stopped_goal, other_goal = _goal(f"pstop-a-{run}", cap, chain), _goal(f"pstop-b-{run}", cap, chain)
    spid, opid = plan_id(stopped_goal["goal_id"]), plan_id(other_goal["goal_id"])
    now = lambda: int(time.time() * 1000)  # noqa: E731

    async def go():
        async with Simulation(kafka_bootstrap, resources, lambda *a: "ok", work_s=0.3) as sim:
            try:
                await asyncio.sleep(1.5)
                for g in (stopped_goal, other_goal):
                    await sim.send(T.GOALS_CREATED.name, g["goal_id"], g)
                await sim.until({spid, opid}, done=lambda r: any(a["plan_id"] == spid for a in r.assignments),
                                timeout_s=60)
                stop = codec.control_record("STOP", spid, reason="test", by="pytest", at_ms=now())
                stopped_ms = now()
                await sim.send(stop.topic, stop.key, stop.value)
                await sim.until({spid, opid}, done=lambda r: r.status.get(opid) in ENDED, timeout_s=60)
                await sim.until({spid, opid}, done=lambda r: False, timeout_s=2)   # and a little longer
                during = [a for a in sim.run.assignments if a["plan_id"] == spid]
                resume = codec.control_record("RESUME", spid, by="pytest", at_ms=now())
                resumed_ms = now()
                await sim.send(resume.topic, resume.key, resume.value)
                seen = await sim.until({spid, opid}, timeout_s=60)
                return stopped_ms, during, resumed_ms, seen
            finally:
                await sim.tombstone()
    stopped_ms, during, resumed_ms, seen = asyncio.run(go())
    assert seen.status == {spid: "COMPLETED", opid: "COMPLETED"}, seen.status
    late = [(a["task"]["task_id"], a["_ts"] - stopped_ms) for a in during if a["_ts"] > stopped_ms + 1000]
    assert not late, f"assignments of the stopped plan more than 1 s after the stop: {late}"
    assert len(during) < len(chain), "the stopped plan did not run to the end while stopped"
    other_after = [a for a in seen.assignments if a["plan_id"] == opid and a["_ts"] > stopped_ms + 1000]
    assert other_after, "the other plan kept being dispatched"
    restarted = sorted(a["_ts"] for a in seen.assignments if a["plan_id"] == spid and a["_ts"] > stopped_ms + 1000)
    assert restarted and restarted[0] >= resumed_ms - 50 and restarted[0] - resumed_ms < 5000, \
        "resume restarts the stopped plan"
    by_attempt = [(a["plan_id"], a["task"]["task_id"], a["attempt"]) for a in seen.assignments]
    assert len(by_attempt) == len(set(by_attempt)), "tasks.assigned exactly once per attempt"
