"""The Triton client's fallback without any server: at once, counted, breaker open after."""
from __future__ import annotations

import asyncio
import time

from inference import base
from inference.estimator import FALLBACK, EstimatorClient
from processors.config import PlanningConfig
from processors.model import Goal
from streams import settings
from tests.kafka_helpers import free_port

GOAL = Goal(goal_id="g-cli", title="Launch billing API", created_at_ms=1_700_000_000_000)


def _count(reason: str) -> float:
    return base.FALLBACKS.labels("estimator", reason)._value.get()


def test_unreachable_server_falls_back_and_opens_the_breaker():
    client = EstimatorClient(f"127.0.0.1:{free_port()}", timeout_s=5.0, retry_after_s=60)
    before_err = _count("unavailable") + _count("error") + _count("timeout")
    before_open = _count("breaker_open")

    async def go():
        first = await client.for_goal(GOAL, PlanningConfig())
        started = time.monotonic()
        second = await client.for_goal(GOAL, PlanningConfig())
        await client.close()
        return first, second, time.monotonic() - started

    first, second, _ = asyncio.run(go())
    assert first.source == FALLBACK and first.estimates == ()
    assert second.source == FALLBACK
    assert _count("unavailable") + _count("error") + _count("timeout") == before_err + 1
    assert _count("breaker_open") == before_open + 1      # the second call did not touch the network


def test_no_url_is_a_fallback_and_explicit_goals_are_not_estimated():
    from processors.model import TaskSpec
    import dataclasses
    client = EstimatorClient("")
    assert asyncio.run(client.for_goal(GOAL, PlanningConfig())).source == FALLBACK
    explicit = dataclasses.replace(GOAL, tasks=(TaskSpec("a", "A", 2.0),))
    assert asyncio.run(client.for_goal(explicit, PlanningConfig())) is None


def test_triton_settings_section():
    s = settings.load(env={"TRITON_ENABLED": "on", "TRITON_URL": "10.0.0.1:8001", "TRITON_TIMEOUT_S": "0.2"})
    assert s.triton.enabled and s.triton.url == "10.0.0.1:8001" and s.triton.timeout_s == 0.2
    assert not settings.load(env={}).triton.enabled
    import pytest
    with pytest.raises(ValueError):
        settings.TritonSettings.from_mapping({"nope": 1}, {})
    with pytest.raises(ValueError):
        settings.TritonSettings.from_mapping({}, {"TRITON_ENABLED": "maybe"})


def test_training_is_due_when_enough_new_history_accumulated(tmp_path):
    import json
    from triton_models import training
    assert training.due(tmp_path, 600, 500)               # never trained: 600 new tasks
    assert not training.due(tmp_path, 400, 500)
    (tmp_path / "estimator").mkdir()
    (tmp_path / "estimator" / "evaluations.jsonl").write_text(json.dumps({"tasks": 600}) + "\n")
    assert not training.due(tmp_path, 900, 500) and training.due(tmp_path, 1100, 500)
