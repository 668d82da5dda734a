"""A real planner worker plans from episodic memory: the Chroma sink (real Chroma, MiniLM)
serves recall from its process; the worker (another process) asks it off its event loop."""
from __future__ import annotations

import time
import uuid

import pytest

from processors.ids import plan_id
from tests import sinks_fixtures as F
from tests.e2e.test_planner_pipeline import _metric
from tests.kafka_helpers import collect, free_port, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_worker_reuses_a_similar_completed_goal_and_says_so(kafka_bootstrap, planner_stack, stores, tmp_path):
    from sinks.chroma import ChromaSink

    folder = tmp_path / "chroma"
    sink = ChromaSink(folder, serve=True)
    sink.setup()
    try:
        run = uuid.uuid4().hex[:8]
        g = F.goal(f"past-{run}", title="Launch billing API", objectives=("Design", "Build"))
        p = F.plan(f"past-plan-{run}", g["goal_id"],
                   tasks=[F.task("t1", 0, 10, resources={"cpu": 1.0}), F.task("t2", 10, 20, deps=["t1"],
                                                                           resources={"cpu": 1.0})])
        sink.memory.apply([g], [p], [F.feedback(p["plan_id"], "t1", "COMPLETED", 15.0),
                                     F.feedback(p["plan_id"], "t2", "COMPLETED", 26.0)])
        port = free_port()
        planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, MEMORY_DIR=folder, MEMORY_TIMEOUT_S=10,
                      CHIMERA_METRICS_PORT=port)
        now = int(time.time() * 1000)
        similar = {**F.goal(f"again-{run}", title="Launch the billing API", objectives=("Design", "Build"),
                            created_at_ms=now), "created_at_ms": now}
        novel = F.goal(f"novel-{run}", title="Plant tomatoes in the garden", domain="research",
                       objectives=("Dig", "Water"), created_at_ms=now)
        produce(kafka_bootstrap, T.GOALS_CREATED.name, [(x["goal_id"], x) for x in (similar, novel)])
        wanted = {plan_id(similar["goal_id"]), plan_id(novel["goal_id"])}
        plans = {r.value["plan_id"]: r.value for r in collect(
            kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in wanted, count=2)}
    finally:
        sink.close()
    reused, fresh = plans[plan_id(similar["goal_id"])], plans[plan_id(novel["goal_id"])]
    assert reused["strategy"] == "memory" and reused["memory"]["source_goal_id"] == g["goal_id"]
    assert reused["memory"]["tasks_reused"] == 2 and reused["memory"]["tasks_observed"] == 2
    assert {t["task_id"]: t["estimate"]["most_likely"] for t in reused["tasks"]} == {"t1": 15.0, "t2": 26.0}
    assert fresh["memory"] is None and fresh["strategy"] != "memory"
    assert _metric(port, "layer2_plans_memory_total", 'used="true"') == 1
    assert _metric(port, "layer2_plans_memory_total", 'used="false"') == 1
    assert _metric(port, "layer2_memory_reuse_rate") == pytest.approx(0.5)
