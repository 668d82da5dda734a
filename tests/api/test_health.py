"""Health on a broker of its own: green with a planner worker, red with the reason when the
broker stops, green again when it is back; red with the lag when the worker stops consuming."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from infra.kafka import KafkaBroker
from streams import settings as settings_mod
from streams.services import Worker
from tests.api.helpers import ENV, GOAL, Keys, api_client, h, wait_for
from tests.conftest import fresh_group
from tests.kafka_helpers import free_port
from topics.admin import create_topics
from api.health import Checks

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


def test_health_red_with_reason_when_broker_stops_and_green_after(tmp_path):
    broker = KafkaBroker(data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port()).start()
    worker = None
    try:
        bs = broker.bootstrap
        app_id = f"chimera-health-{uuid.uuid4().hex[:6]}"
        asyncio.run(create_topics(bs))
        asyncio.run(fresh_group(bs, app_id))
        worker = Worker(bs, env={k: str(v) for k, v in ENV.items()}, app_id=app_id,
                        log_path=tmp_path / "worker.log").start()
        settings = settings_mod.load(env={"KAFKA_BOOTSTRAP": bs, "CHIMERA_APP_ID": app_id, "API_LAG_THRESHOLD": "2",
                                          "API_HEALTH_COMPONENTS": "planner,decomposer,coordinator"})
        keys = Keys()
        with api_client(bs, keys, health=lambda view: Checks(settings, view, env={})) as c:
            def green():
                return c.get("/health")
            r = wait_for(green, lambda r: r.status_code == 200, timeout=120)
            assert r.status_code == 200, r.json()["reasons"]
            assert r.json()["components"]["triton"] == "disabled"
            assert c.get("/health/planner").json()["status"] == "healthy"
            assert c.get("/health/nothing").status_code == 404

            broker.stop()
            r = c.get("/health")
            assert r.status_code == 503 and any("broker unreachable" in x for x in r.json()["reasons"]), r.json()
            r = c.get("/health/planner")
            assert r.status_code == 503 and "broker unreachable" in r.json()["reasons"][0]

            broker.start()
            r = wait_for(green, lambda r: r.status_code == 200, timeout=120)
            assert r.status_code == 200, r.json()

            # the worker stops consuming: goals pile up, lag over the threshold (2) turns the decomposer red
            worker.stop()
            for i in range(3):
                assert c.post("/api/v1/plans", json={**GOAL, "goal_id": f"lag-{i}"}, headers=h(keys.planner)
                              ).status_code == 202
            r = c.get("/health/decomposer")
            assert r.status_code == 503 and "consumer lag 3 over threshold 2" in r.json()["reasons"][0], r.json()
            assert c.get("/health").status_code == 503
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


@pytest.mark.integration
def test_store_and_triton_down_are_named(kafka_bootstrap):
    """Nothing listens on these ports: a real refusal, named in the reasons."""
    from tests.kafka_helpers import free_port
    settings = settings_mod.load(env={"KAFKA_BOOTSTRAP": kafka_bootstrap})
    env = {"NEO4J_URI": f"bolt://127.0.0.1:{free_port()}", "TRITON_URL": f"127.0.0.1:{free_port()}"}
    checks = Checks(settings, env=env)
    sinks = checks.component("sinks")
    assert sinks.status == "unhealthy" and any(r.startswith("store neo4j down") for r in sinks.reasons), sinks
    triton = checks.component("triton")
    assert triton.status == "unhealthy" and triton.reasons[0].startswith("Triton down at 127.0.0.1:"), triton


@pytest.mark.integration
@pytest.mark.triton
def test_a_serving_triton_is_healthy(kafka_bootstrap, triton_server):
    """The same TRITON_URL the planner uses (gRPC host:port), on the real server."""
    settings = settings_mod.load(env={"KAFKA_BOOTSTRAP": kafka_bootstrap})
    triton = Checks(settings, env={"TRITON_URL": triton_server.url}).component("triton")
    assert triton.status == "healthy", triton
