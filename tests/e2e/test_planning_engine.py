"""The planning engine through Kafka: refinement, approval, feedback."""
from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from processors.ids import plan_id
from processors.scheduling import parse_sm
from tests.kafka_helpers import collect, free_port, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
PSPLIB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "psplib"
KINDS = ("cpu", "gpu", "memory_gb", "agents")
HOUR_MS = 3_600_000


def _goal_from_psplib(name: str, goal_id: str) -> dict:
    """A PSPLIB instance as a goal with explicit tasks (dummy start/end jobs dropped)."""
    project = parse_sm((PSPLIB / "j30" / name).read_text())
    n = len(project.durations)
    preds = {j: [] for j in range(n)}
    for i, succ in enumerate(project.successors):
        for j in succ:
            preds[j].append(i)
    real = [j for j in range(n) if project.durations[j] > 0 or any(project.demands[j])]
    tasks = [{"task_id": f"j{j}", "name": f"job {j}", "duration_hours": float(project.durations[j]),
              "depends_on": [f"j{i}" for i in preds[j] if i in real],
              "resources": {k: float(d) for k, d in zip(KINDS, project.demands[j]) if d},
              "capabilities": []} for j in real]
    return {"goal_id": goal_id, "title": f"PSPLIB {name}", "tasks": tasks, "created_at_ms": 1_700_000_000_000,
            "constraints": {"capacities": {k: float(c) for k, c in zip(KINDS, project.capacities)},
                            "max_parallelism": 100}}


def test_refinement_publishes_a_shorter_plan_version(kafka_bootstrap, planner_stack):
    """j3010_3: the fast path's schedule is longer than the optimum (62); CP-SAT finds better."""
    goal = _goal_from_psplib("j3010_3.sm", f"psplib-{uuid.uuid4().hex[:8]}")
    # a goal can only cap capacity: the instance's capacities are what the worker has (its
    # defaults, nothing reported), exactly (no buffer). A generous refine budget: CP-SAT
    # finding a shorter schedule must not depend on how loaded the machine is.
    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=10, PLANNING_RESOURCE_BUFFER_PERCENTAGE=0,
                  PLANNING_DEFAULT_CAPACITIES=json.dumps(goal["constraints"]["capacities"]))
    pid = plan_id(goal["goal_id"])
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(goal["goal_id"], goal)])
    first = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] == pid, count=1)[0].value
    update = collect(kafka_bootstrap, T.PLANS_UPDATED.name, lambda r: r.value["plan"]["plan_id"] == pid,
                     count=1)[0].value
    assert first["version"] == 1 and first["makespan_hours"] > 62
    refined = update["plan"]
    assert refined["version"] == 2 and update["previous_version"] == 1
    assert 62 <= refined["makespan_hours"] < first["makespan_hours"]
    assert update["previous_makespan_hours"] == first["makespan_hours"]
    assert refined["reason"].startswith("refined") and refined["schedule_method"].startswith("cpsat")
    caps = goal["constraints"]["capacities"]
    for t in refined["tasks"]:  # the refined schedule keeps precedence and capacities
        for d in t["depends_on"]:
            assert next(x for x in refined["tasks"] if x["task_id"] == d)["finish_hours"] <= t["start_hours"]
    for hour in range(int(refined["makespan_hours"])):
        running = [t for t in refined["tasks"] if t["start_hours"] <= hour < t["finish_hours"]]
        for k in KINDS:
            assert sum(t["resources"].get(k, 0) for t in running) <= caps[k]


def _cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("chimera")
    return subprocess.run([str(exe), *args], env={**os.environ, "KAFKA_BOOTSTRAP": bootstrap},
                          capture_output=True, text=True, timeout=60)


def test_pending_plan_waits_for_cli_approval_then_feedback_releases_successors(kafka_bootstrap, planner_stack):
    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0)
    run = uuid.uuid4().hex[:8]
    goal = {"goal_id": f"approve-{run}", "title": "needs a person", "created_at_ms": 1_700_000_000_000,
            "constraints": {"deadline_ms": 1_700_000_000_000 + 4 * HOUR_MS},  # 4 h for 6 h of work
            "tasks": [{"task_id": "a", "name": "a", "duration_hours": 2},
                      {"task_id": "b", "name": "b", "duration_hours": 4, "depends_on": ["a"]},
                      {"task_id": "c", "name": "c", "duration_hours": 1, "depends_on": ["a"]}]}
    pid = plan_id(goal["goal_id"])
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(goal["goal_id"], goal)])
    first = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] == pid, count=1)[0].value
    assert first["approval"] == "PENDING" and any("deadline" in v for v in first["violations"])
    assert not collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.value["plan_id"] == pid, count=1,
                       timeout=3), "a pending plan hands out nothing"

    stale = _cli(kafka_bootstrap, "approve", pid, "--version", "7")
    assert stale.returncode == 0, stale.stderr
    done = _cli(kafka_bootstrap, "approve", pid, "--version", "1")
    assert done.returncode == 0, done.stderr
    update = collect(kafka_bootstrap, T.PLANS_UPDATED.name, lambda r: r.value["plan"]["plan_id"] == pid,
                     count=1, settle=2)
    assert len(update) == 1, "the stale approval (version 7) changes nothing"
    approved = update[0].value["plan"]
    assert approved["version"] == 2 and approved["approval"] == "APPROVED"
    # the approver is who the broker authenticated, never a typed name: here nobody (no SASL)
    assert f"unauthenticated:{getpass.getuser()}" in approved["reason"]
    assigned = collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.value["plan_id"] == pid, count=1,
                       settle=2)
    assert [a.value["task"]["task_id"] for a in assigned] == ["a"]

    produce(kafka_bootstrap, T.EXECUTION_FEEDBACK.name, [(pid, {
        "event_id": f"fb-{run}", "plan_id": pid, "task_id": "a", "status": "COMPLETED", "progress_pct": 100.0,
        "actual_hours": 2.5, "reported_at_ms": int(time.time() * 1000)})])
    assigned = collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.value["plan_id"] == pid, count=3,
                       settle=2)
    assert sorted(a.value["task"]["task_id"] for a in assigned) == ["a", "b", "c"]


def test_cli_reports_unreachable_broker_clearly():
    out = _cli(f"127.0.0.1:{free_port()}", "topics", "list")
    assert out.returncode == 2
    assert "no Kafka broker answers" in out.stderr


def test_cli_produce_sample_and_tail_show_decoded_plans(kafka_bootstrap, planner_stack):
    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0)
    produced = _cli(kafka_bootstrap, "produce", "goals", "--sample", "3")
    assert produced.returncode == 0, produced.stderr
    pids = {line.split(" -> ")[1] for line in produced.stdout.splitlines() if " -> " in line}
    assert len(pids) == 3
    collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in pids, count=3)
    tail = _cli(kafka_bootstrap, "tail", T.PLANS_CREATED.name, "--idle", "3")
    assert tail.returncode == 0, tail.stderr
    plans = [json.loads(line) for line in tail.stdout.splitlines()]
    mine = [p for p in plans if p["value"]["plan_id"] in pids]
    assert {p["value"]["plan_id"] for p in mine} == pids
    assert all(p["topic"] == T.PLANS_CREATED.name and p["key"] == p["value"]["plan_id"] for p in mine)

    bad = _cli(kafka_bootstrap, "produce", "goals", "--sample", "0")
    assert bad.returncode == 2 and "FILE.jsonl or --sample" in bad.stderr
