"""Crashes and global state: a killed worker loses nothing, resources reach every plan."""
from __future__ import annotations

import time
import uuid

import pytest

from processors.ids import plan_id
from streams import samples
from tests.kafka_helpers import collect, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def test_worker_killed_mid_stream_loses_no_goal_and_replays_identically(kafka_bootstrap, planner_stack):
    run = uuid.uuid4().hex[:8]
    goals = samples.sample_goals(12, int(time.time() * 1000), prefix=f"crash-{run}")
    wanted = {plan_id(g["goal_id"]) for g in goals}
    worker = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0.3)
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in goals])
    some = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in wanted, count=2)
    assert some
    worker.kill()  # SIGKILL: no clean shutdown, no final commit
    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0.3)  # same group: resumes from committed offsets + changelog
    plans = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in wanted,
                    count=len(wanted), timeout=120, settle=3)
    by_plan: dict[str, dict[bytes, dict]] = {}
    for r in plans:
        by_plan.setdefault(r.value["plan_id"], {})[r.raw] = r.value
    assert set(by_plan) == wanted, f"every accepted goal has its plan after the crash; missing: {wanted - set(by_plan)}"
    differ = {pid: _differences(list(v.values())) for pid, v in by_plan.items() if len(v) > 1}
    assert not differ, f"a re-processed goal yields byte-identical records; fields that differ: {differ}"


def _differences(values: list[dict]) -> dict:
    """The top-level fields on which two versions of one record disagree (the failure's story)."""
    a, b = values[0], values[1]
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def test_pending_plan_from_before_a_restart_can_still_be_approved(kafka_bootstrap, planner_stack):
    """The plan table is recovered from its changelog by the next worker."""
    run = uuid.uuid4().hex[:8]
    g = {"goal_id": f"restart-{run}", "title": "restart", "created_at_ms": 1_700_000_000_000,
         "constraints": {"deadline_ms": 1_700_000_000_000 + 3_600_000},
         "tasks": [{"task_id": "a", "name": "a", "duration_hours": 2}]}
    pid = plan_id(g["goal_id"])
    first = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0)
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g)])
    plan = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] == pid, count=1)[0].value
    assert plan["approval"] == "PENDING"
    first.stop()
    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0)
    produce(kafka_bootstrap, T.PLANS_APPROVALS.name, [(pid, {"plan_id": pid, "version": 1, "decision": "APPROVE",
                                                             "by": "ops", "decided_at_ms": 1})])
    assigned = collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.value["plan_id"] == pid, count=1)
    assert [a.value["task"]["task_id"] for a in assigned] == ["a"]


def test_resource_availability_shapes_the_schedule(kafka_bootstrap, planner_stack):
    """One agent available: tasks that each need an agent cannot overlap."""
    run = uuid.uuid4().hex[:8]
    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, PLANNING_RESOURCE_BUFFER_PERCENTAGE=0,
                  PLANNING_DEFAULT_CAPACITIES='{"agents": 0}', group=f"-res-{run}")
    produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [
        (f"agent-{run}", {"resource_id": f"agent-{run}", "kind": "agent", "capacities": {"agents": 1.0},
                          "capabilities": ["python"], "available": True, "updated_at_ms": 1})])
    try:
        time.sleep(3)  # the global table catches up
        g = {"goal_id": f"res-{run}", "title": "parallel work", "created_at_ms": 1_700_000_000_000,
             "tasks": [{"task_id": t, "name": t, "duration_hours": 2, "resources": {"agents": 1}} for t in "abc"]}
        pid = plan_id(g["goal_id"])
        produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g)])
        plan = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] == pid, count=1)[0].value
    finally:  # a tombstone: later tests' goals must not see this one agent
        produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(f"agent-{run}", None)])
    assert plan["makespan_hours"] == 6, "three 2-hour tasks on one agent run one after another"
    bad = f"res-bad-{run}"
    produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(bad, b"\x00garbage")])
    dead = collect(kafka_bootstrap, T.RESOURCES_AVAILABILITY.dlq, lambda r: r.key == bad, count=1)
    assert dead[0].headers["chimera.dlq.reason"] in ("not_avro", "unknown_schema_id", "schema_mismatch")
