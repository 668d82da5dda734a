"""The planner with the LLM decomposer on a real Triton (SmolLM2 from the wheel, the shipped
adapter if any): each goal's template plan is published at once; the LLM's breakdown then
either becomes v2 (strategy "llm", estimates_source "decomposer/<version>") or is counted as
rejected / ignored with a reason and never published. With the server killed, plans keep
flowing on the template at once, and the fallbacks are counted."""
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

OUTCOMES = "layer2_llm_decompositions_total"


def _metrics(port: int, name: str) -> dict[str, float]:
    """{'outcome/reason': value} of a labelled counter."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1:line.index("}")].split(",") if kv)
            out[f"{labels['outcome'].strip(chr(34))}/{labels.get('reason', '').strip(chr(34))}"] = \
                float(line.split()[-1])
    return out


def _total(m: dict[str, float], outcomes=("accepted", "ignored", "rejected", "fallback")) -> float:
    return sum(v for k, v in m.items() if k.split("/")[0] in outcomes)


def _wait(port: int, want: float, timeout: float, outcomes=("accepted", "ignored", "rejected", "fallback")):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = _metrics(port, OUTCOMES)
        if _total(m, outcomes) >= want:
            return m
        time.sleep(1)
    return _metrics(port, OUTCOMES)


def _send_goals(bootstrap: str, prefix: str, timeout: float, worker) -> tuple[set[str], float]:
    """Two sample goals produced; their template plans collected: (their plan ids, when sent)."""
    goals = samples.sample_goals(2, int(time.time() * 1000), prefix=prefix)
    wanted = {plan_id(g["goal_id"]) for g in goals}
    sent = time.monotonic()
    produce(bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in goals])
    created = collect(bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in wanted, count=2,
                      timeout=timeout)
    assert len(created) == 2, worker.log_tail()
    assert {r.value["strategy"] for r in created}.isdisjoint({"llm"})      # the template plan, first
    return wanted, sent


@pytest.mark.timeout(900)
def test_llm_breakdown_is_judged_off_the_fast_path_and_a_dead_server_costs_nothing(
        kafka_bootstrap, planner_stack, triton_repository, tmp_path):
    from infra import containers
    server = containers.triton(triton_repository, models=("decomposer",), log_dir=tmp_path / "triton").start()
    try:
        port = free_port()
        # approval by a person: nothing is dispatched, so the LLM breakdown is judged on its merits
        worker = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, PLANNING_AUTO_APPROVE_LOW_RISK_PLANS="false",
                               CHIMERA_METRICS_PORT=port, TRITON_DECOMPOSE="true", TRITON_URL=server.url,
                               TRITON_DECOMPOSE_TIMEOUT_S=250, TRITON_RETRY_AFTER_S=600)
        run = uuid.uuid4().hex[:8]
        wanted, sent = _send_goals(kafka_bootstrap, f"llm-a-{run}", 120, worker)
        first_s = time.monotonic() - sent

        m = _wait(port, 2, 280)   # every LLM breakdown judged: accepted, ignored, rejected or fallback
        print("LLM outcomes with the shipped decomposer:", m, f"(template plans after {first_s:.1f}s)")
        assert _total(m) == 2, (m, worker.log_tail())
        accepted = sum(v for k, v in m.items() if k.startswith("accepted/"))
        assert sum(v for k, v in m.items() if k.startswith("proposed/")) == \
            accepted + sum(v for k, v in m.items() if k.startswith("ignored/"))
        assert all(k.split("/", 1)[1] for k in m if not k.startswith("accepted"))    # every outcome has a reason
        updates = collect(kafka_bootstrap, T.PLANS_UPDATED.name,
                          lambda r: r.value["plan"]["plan_id"] in wanted and r.value["plan"]["strategy"] == "llm",
                          count=int(accepted), timeout=30, settle=2)
        assert len(updates) == accepted, m
        for u in updates:          # the LLM's version: v2 of the template plan, source marked
            assert u.value["plan"]["version"] == 2 and u.value["plan"]["estimates_source"].startswith("decomposer/")
            assert "llm_decomposition" in u.value["plan"]["reason"]

        server.kill()              # mid-stream: the worker keeps running
        before = _total(m, ("fallback",))
        _, sent = _send_goals(kafka_bootstrap, f"llm-b-{run}", 60, worker)
        m = _wait(port, before + 2, 30, ("fallback",))
        assert _total(m, ("fallback",)) == before + 2, m
        assert time.monotonic() - sent < 30       # nothing waited on the dead server's timeout (250 s)
        assert worker.alive()
    finally:
        server.close()
