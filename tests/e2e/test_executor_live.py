"""The planner and real executors on the real broker (issue 8 joined to issue 7's live plans):
executors announce themselves as resources, the planner's ledgers allocate tasks to them, they
run every task in the wasmtime sandbox in dependency order until the plan is COMPLETED; a
`kill -9` of one executor mid-task has its tasks reallocated after the heartbeat timeout and
run to completion with no COMPLETED published twice; an emergency stop interrupts running
work within one second (CANCELLED) and nothing runs again until RESUME.
Every executor is stopped and its resource tombstoned at the end (the broker is shared)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter

import pytest

from executor.build import toolchain_missing
from processors.ids import plan_id
from streams import client, codec
from streams.simulate import Simulation
from tests.executor_helpers import Executors, Feedback, ends
from tests.kafka_helpers import collect
from topics import registry as T
from topics.tracing import outgoing, trace_id_of

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(toolchain_missing() is not None and not os.environ.get("CI"),
                                 reason=f"WASI toolchain: {toolchain_missing()} (run `make modules`)")]

ENV = dict(PLANNING_REFINE_BUDGET_SECONDS=0, PLANNING_RETRY_BASE_SECONDS=0.5, PLANNING_MAX_TASK_ATTEMPTS=3,
           PLANNING_RESOURCE_HEARTBEAT_TIMEOUT_SECONDS=3, PLANNING_PROGRESS_INTERVAL_SECONDS=0.5,
           PLANNING_ENABLE_CONTINUOUS_REPLANNING="false")


@pytest.fixture
def executors(kafka_bootstrap, tmp_path):
    """Executors in their own consumer groups, each starting at the end of tasks.assigned."""
    factory = Executors(kafka_bootstrap, tmp_path)

    def start(executor_id: str, **kw):
        asyncio.run(client.commit_at_end(kafka_bootstrap, f"chimera-executor.{executor_id}",
                                         [T.TASKS_ASSIGNED.name]))
        return factory(executor_id, **kw)
    yield start
    factory.close()


def _goal(goal_id: str, tasks: list[tuple[str, str, list[str], list[str]]]) -> dict:
    return {"goal_id": goal_id, "title": f"executed {goal_id}", "created_at_ms": int(time.time() * 1000),
            "tasks": [{"task_id": t, "name": name, "duration_hours": 1, "depends_on": deps, "capabilities": caps}
                      for t, name, deps, caps in tasks]}


def _announced(bootstrap: str, ids: set[str]) -> None:
    """Both executors are on resources.availability; the planner's global table has them soon after."""
    recs = collect(bootstrap, T.RESOURCES_AVAILABILITY.name, lambda r: r.key in ids and r.value, count=len(ids) * 2,
                   timeout=60)
    assert {r.key for r in recs} == ids, "every executor announced itself (and heartbeats)"
    v = next(r.value for r in recs)
    assert v["kind"] == "agents" and v["health"] == "HEALTHY" and v["heartbeat_ms"] and v["free"]


def _silent(*_):
    return "silent"     # the Simulation only watches here: the real executors answer


def test_a_goal_runs_on_two_executors_in_the_sandbox_in_dependency_order_to_completed(
        kafka_bootstrap, planner_stack, executors):
    run = uuid.uuid4().hex[:8]
    data, qa, common = f"data-{run}", f"qa-{run}", f"any-{run}"
    ex_a, ex_b = f"ex-a-{run}", f"ex-b-{run}"
    planner_stack(**ENV)
    executors(ex_a, slots=2, capabilities=["wasm", data, common], rate=1.0)
    executors(ex_b, slots=2, capabilities=["wasm", qa, common], rate=2.0)
    goal = _goal(f"exec-{run}", [("ingest", "Ingest the data", [], [data]),
                                 ("build", "Build the artefact", ["ingest"], [common]),
                                 ("crunch", "wasm: compute 300000 3", [], [common]),
                                 ("tests", "Run the tests", ["build"], [qa]),
                                 ("release", "Deploy the release", ["tests", "crunch"], [common])])
    pid = plan_id(goal["goal_id"])
    _announced(kafka_bootstrap, {ex_a, ex_b})
    fb = Feedback(kafka_bootstrap, ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), {pid})

    trace, trace_id = outgoing(None, "test.goal")   # a W3C trace started with the goal

    async def go():
        async with Simulation(kafka_bootstrap, [], _silent) as sim:
            await asyncio.sleep(1.5)
            await sim.send(T.GOALS_CREATED.name, goal["goal_id"], goal, headers=trace)
            return await sim.until({pid}, timeout_s=120)
    seen = asyncio.run(go())
    fb.poll_until(lambda rs: False, timeout=3)    # and anything late that must not be there
    fb.close()
    assert seen.status.get(pid) == "COMPLETED", (seen.status, [(a["task"]["task_id"], a["assigned_to"])
                                                               for a in seen.assignments])
    by_task = {a["task"]["task_id"]: a for a in seen.assignments}
    assert len(seen.assignments) == 5 and set(by_task) == {"ingest", "build", "crunch", "tests", "release"}
    assert by_task["ingest"]["assigned_to"] == ex_a and by_task["tests"]["assigned_to"] == ex_b
    assert {a["assigned_to"] for a in seen.assignments} <= {ex_a, ex_b}
    completed = [r for r in fb.records if r["status"] == "COMPLETED"]
    assert Counter(r["task_id"] for r in completed) == Counter(set(by_task)), "each task COMPLETED exactly once"
    assert not [r for r in fb.records if r["status"] in ("FAILED", "CANCELLED")]
    done_at = {r["task_id"]: r["_ts"] for r in completed}
    modules = {"ingest": "data-check", "build": "build-step", "crunch": "compute", "tests": "test-run",
               "release": "build-step"}
    for r in completed:     # ran in the sandbox of the executor it was allocated to, with the right module
        msg = json.loads(r["message"])
        assert msg["executor"] == by_task[r["task_id"]]["assigned_to"] and msg["module"] == modules[r["task_id"]]
    assert json.loads(json.loads(next(r for r in completed if r["task_id"] == "crunch")["message"])["summary"]) \
        == {"n": 300000, "primes": 25997, "rounds": 3}
    # expected vs actual: the assignments said what to produce, the executors said what they did, no violation
    assert by_task["build"]["expects"] == {"files": ["artefact.bin"], "exit_status": 0}
    assert by_task["tests"]["expects"] == {"files": [], "exit_status": 0}
    produced = {r["task_id"]: r["produced"] for r in completed}
    assert produced["build"] == produced["release"] == {"files": ["artefact.bin"], "exit_status": 0}
    assert produced["tests"] == produced["ingest"] == {"files": [], "exit_status": 0}
    assert not [a for a in seen.alerts if a["risk"]["category"] == "TECHNICAL" and "output check" in a["risk"]["title"]]
    started = {r["task_id"]: r["_ts"] for r in fb.records if r["status"] == "STARTED"}
    for t in goal["tasks"]:  # dependency order: nothing is handed out, nor starts, before its predecessors completed
        for dep in t["depends_on"]:
            assert by_task[t["task_id"]]["_ts"] >= done_at[dep] and started[t["task_id"]] >= done_at[dep], \
                (t["task_id"], dep)
    last = seen.updates[pid][-1]
    assert last["trigger"] == "completed" and last["progress_pct"] == pytest.approx(100.0)
    # one trace from the goal to the plan, its assignments and the executors' feedback
    for topic, n in ((T.PLANS_CREATED.name, 1), (T.TASKS_ASSIGNED.name, 5)):
        recs = collect(kafka_bootstrap, topic, lambda r: r.key == pid, count=n, timeout=30)
        assert len(recs) >= n and {trace_id_of(r.headers.get("traceparent")) for r in recs} == {trace_id}, topic
    assert {trace_id_of(r["_headers"].get("traceparent")) for r in fb.records} == {trace_id}


def test_kill_9_of_an_executor_mid_task_reallocates_after_the_heartbeat_timeout_exactly_once(
        kafka_bootstrap, planner_stack, executors):
    run = uuid.uuid4().hex[:8]
    common = f"any-{run}"
    ex_a, ex_b = f"ex-k-{run}", f"ex-s-{run}"
    planner_stack(**ENV)
    fuel = ("--fuel", str(10**13))     # the long tasks run for seconds, not out of fuel
    victim = executors(ex_a, slots=2, capabilities=["wasm", common], rate=1.0, args=fuel)   # the cheaper: gets the work
    executors(ex_b, slots=2, capabilities=["wasm", common], rate=2.0, args=fuel)
    goal = _goal(f"kill-{run}", [("long1", "wasm: compute 1000000 400", [], [common]),
                                 ("long2", "wasm: compute 1000000 401", [], [common]),
                                 ("after", "Run the tests", ["long1", "long2"], [common])])
    pid = plan_id(goal["goal_id"])
    _announced(kafka_bootstrap, {ex_a, ex_b})
    fb = Feedback(kafka_bootstrap, ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), {pid})

    async def go():
        async with Simulation(kafka_bootstrap, [], _silent) as sim:
            await asyncio.sleep(1.5)
            await sim.send(T.GOALS_CREATED.name, goal["goal_id"], goal)
            await asyncio.to_thread(fb.poll_until, lambda rs: {"long1", "long2"} <= {
                r["task_id"] for r in rs if r["status"] == "STARTED"}, 60)
            await asyncio.sleep(1.0)
            assert victim.poll() is None
            os.kill(victim.pid, signal.SIGKILL)
            killed_ms = int(time.time() * 1000)
            return killed_ms, await sim.until({pid}, timeout_s=150)
    killed_ms, seen = asyncio.run(go())
    fb.poll_until(lambda rs: False, timeout=3)
    fb.close()
    assert seen.status.get(pid) == "COMPLETED", seen.status
    first = {a["task"]["task_id"]: a for a in seen.assignments if a["attempt"] == 1}
    assert first["long1"]["assigned_to"] == ex_a and first["long2"]["assigned_to"] == ex_a
    for t in ("long1", "long2"):
        again = [a for a in seen.assignments if a["task"]["task_id"] == t and a["attempt"] > 1]
        assert [a["assigned_to"] for a in again] == [ex_b], (t, again)
        waited = again[0]["_ts"] - killed_ms
        assert 1000 <= waited <= 20_000, f"{t} reallocated {waited} ms after the kill (heartbeat timeout 3 s)"
    completed = Counter(r["task_id"] for r in fb.records if r["status"] == "COMPLETED")
    assert completed == Counter({"long1": 1, "long2": 1, "after": 1}), completed
    assert not [r for r in fb.records if r["status"] == "FAILED"]
    assert all(json.loads(r["message"])["executor"] == ex_b for r in fb.records
               if r["status"] == "COMPLETED" and r["task_id"].startswith("long"))
    assert [a for a in seen.alerts if a["risk"]["category"] == "RESOURCE" and ex_a in a["risk"]["title"]]


def test_an_emergency_stop_interrupts_running_work_within_a_second_and_resume_runs_it_again(
        kafka_bootstrap, planner_stack, executors):
    run = uuid.uuid4().hex[:8]
    common = f"any-{run}"
    ex_a = f"ex-e-{run}"
    planner_stack(**ENV)
    executors(ex_a, slots=2, capabilities=["wasm", common], rate=1.0, args=("--fuel", str(10**14)))
    goal = _goal(f"estop-{run}", [("forever", "wasm: compute 1000000 100000", [], [common]),
                                  ("next", "Run the tests", ["forever"], [common])])
    pid = plan_id(goal["goal_id"])
    _announced(kafka_bootstrap, {ex_a})
    fb = Feedback(kafka_bootstrap, ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), {pid})
    now = lambda: int(time.time() * 1000)  # noqa: E731

    def has(rs, status, attempt):   # attempt 2: any later attempt (an assignment that raced the stop
        return any(r["task_id"] == "forever" and r["status"] == status     # is answered CANCELLED unstarted)
                   and (r["attempt"] == 1 if attempt == 1 else r["attempt"] > 1) for r in rs)

    async def go():
        async with Simulation(kafka_bootstrap, [], _silent) as sim:
            await asyncio.sleep(1.5)
            await sim.send(T.GOALS_CREATED.name, goal["goal_id"], goal)
            await asyncio.to_thread(fb.poll_until, lambda rs: has(rs, "STARTED", 1), 60)
            await asyncio.sleep(0.5)
            stop = codec.control_record("STOP", pid, reason="test", by="pytest", at_ms=now())
            await sim.send(stop.topic, stop.key, stop.value)
            stopped_ms = now()
            await asyncio.to_thread(fb.poll_until, lambda rs: has(rs, "CANCELLED", 1), 10)
            await asyncio.to_thread(fb.poll_until, lambda rs: False, 3)     # stopped: nothing starts
            during = [r for r in fb.records if r["status"] == "STARTED" and r["_ts"] > stopped_ms]
            resume = codec.control_record("RESUME", pid, by="pytest", at_ms=now())
            await sim.send(resume.topic, resume.key, resume.value)
            resumed_ms = now()
            await asyncio.to_thread(fb.poll_until, lambda rs: has(rs, "STARTED", 2), 30)
            cancel = codec.control_record("CANCEL", pid, reason="done testing", by="pytest", at_ms=now())
            await sim.send(cancel.topic, cancel.key, cancel.value)
            await asyncio.to_thread(fb.poll_until, lambda rs: has(rs, "CANCELLED", 2), 10)
            seen = await sim.until({pid}, timeout_s=30)
            return stopped_ms, during, resumed_ms, seen
    stopped_ms, during, resumed_ms, seen = asyncio.run(go())
    fb.close()
    cancelled = [r for r in fb.records if r["status"] == "CANCELLED"]
    assert cancelled[0]["attempt"] == 1 and ", after " in cancelled[0]["message"], cancelled
    took = cancelled[0]["_ts"] - stopped_ms
    assert took < 1000, f"the running sandbox was interrupted and reported {took} ms after the stop"
    assert "stop by pytest" in cancelled[0]["message"] and ex_a in cancelled[0]["message"]
    assert during == [], "nothing started while the plan was stopped"
    restarted = [r for r in fb.records if r["status"] == "STARTED" and r["attempt"] > 1]
    assert restarted and restarted[0]["_ts"] >= resumed_ms - 50, "the interrupted task ran again after RESUME"
    assert cancelled[-1]["attempt"] == restarted[0]["attempt"] and "cancel by pytest" in cancelled[-1]["message"]
    assert not [r for r in fb.records if r["status"] in ("COMPLETED", "FAILED")]
    assert seen.status.get(pid) == "CANCELLED"
