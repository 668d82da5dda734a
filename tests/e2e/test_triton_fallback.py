"""The planner with the estimator on a real Triton: plans say which estimates they used, and
when the server is killed mid-stream plans keep flowing on the heuristics, marked and counted."""
from __future__ import annotations

import time
import urllib.request
import uuid

import pytest

from processors.ids import plan_id
from streams import samples
from tests.kafka_helpers import collect, free_port, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.triton, pytest.mark.slow]


def _metric(port: int, name: str, label: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")) and label in line)


def _plans(bootstrap: str, goals: list[dict]) -> dict[str, dict]:
    wanted = {plan_id(g["goal_id"]) for g in goals}
    recs = collect(bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in wanted, count=len(wanted),
                   timeout=120)
    return {r.value["plan_id"]: r.value for r in recs}


def test_plans_keep_flowing_when_triton_is_killed_mid_stream(kafka_bootstrap, planner_stack, triton_repository,
                                                             tmp_path):
    from infra import containers
    server = containers.triton(triton_repository, models=("estimator",), log_dir=tmp_path / "triton").start()
    try:
        port = free_port()
        # ratio 1.0: the untrained estimator's interval (0.9 x median) counts as confident, so
        # its answers visibly become the plans' estimates
        worker = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, CHIMERA_METRICS_PORT=port, TRITON_ENABLED="true",
                               TRITON_URL=server.url, TRITON_TIMEOUT_S=5, TRITON_RETRY_AFTER_S=600, TRITON_CACHE_TTL_S=0,
                               PLANNING_LEARNED_INTERVAL_RATIO=1.0)
        run = uuid.uuid4().hex[:8]
        before = samples.sample_goals(3, int(time.time() * 1000), prefix=f"tri-a-{run}")
        produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in before])
        plans = _plans(kafka_bootstrap, before)
        assert len(plans) == 3, worker.log_tail()
        assert {p["estimates_source"] for p in plans.values()} == {"estimator/1"}, worker.log_tail()
        assert _metric(port, "layer2_plans_estimates_total", 'source="learned"') == 3

        server.kill()                                  # mid-stream: the worker keeps running
        after = samples.sample_goals(4, int(time.time() * 1000), prefix=f"tri-b-{run}")
        produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in after])
        plans = _plans(kafka_bootstrap, after)
        assert len(plans) == 4, worker.log_tail()
        assert {p["estimates_source"] for p in plans.values()} == {"heuristic:fallback"}
        assert _metric(port, "layer2_plans_estimates_total", 'source="fallback"') == 4
        assert _metric(port, "chimera_inference_fallbacks_total", 'model="estimator"') == 4
        # one failed request opened the breaker; the others did not touch the network
        assert _metric(port, "chimera_inference_fallbacks_total", 'reason="breaker_open"') == 3
        assert worker.alive()
    finally:
        server.close()
