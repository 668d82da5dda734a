"""The probe server (topics/probes.py) over real HTTP: /healthz and /readyz answer from the
registered checks with their reasons, /metrics is still prometheus_client's. The worker kinds'
own checks are tested on real processes (test_executor.py, test_hardening.py,
test_sinks_clickhouse.py)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.kafka_helpers import free_port
from topics import probes


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(probes, "_live", {})     # this test's checks only, not those of the session
    monkeypatch.setattr(probes, "_ready", {})
    srv = probes.serve_from_env({"CHIMERA_METRICS_PORT": str(free_port())})
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_not_ready_until_a_component_registers_then_reasons_then_green(server):
    code, body = _get(server, "/healthz")
    assert code == 200 and json.loads(body)["status"] == "live"
    code, body = _get(server, "/readyz")
    assert code == 503 and json.loads(body)["reasons"] == [probes.NOT_STARTED]

    why = ["owns no partition"]
    probes.register("thing", live=lambda: None, ready=lambda: why[0])
    code, body = _get(server, "/readyz")
    assert code == 503 and json.loads(body) == {"status": "not ready", "components": ["thing"],
                                               "reasons": ["thing: owns no partition"]}
    why[0] = None
    assert _get(server, "/readyz")[0] == 200


def test_a_dead_loop_fails_both_probes_and_a_raising_check_says_so(server):
    probes.register("loop", live=lambda: "its loop has not turned for 90 s", ready=lambda: None)
    probes.register("odd", ready=lambda: 1 / 0)
    code, body = _get(server, "/healthz")
    assert code == 503 and json.loads(body)["reasons"] == ["loop: its loop has not turned for 90 s"]
    code, body = _get(server, "/readyz")
    assert code == 503 and json.loads(body)["reasons"] == [
        "loop: its loop has not turned for 90 s", "odd: check failed: ZeroDivisionError: division by zero"]


def test_unregister_leaves_a_newer_components_checks(server):
    old, new = (lambda: None), (lambda: None)
    probes.register("sinks", live=old, ready=old)
    probes.register("sinks", live=new, ready=new)
    probes.unregister("sinks", old)           # the old instance stopping
    assert probes._live == {"sinks": new}
    probes.unregister("sinks", new)
    assert probes._live == {} and probes._ready == {}


def test_metrics_are_still_served_on_the_same_port(server):
    code, body = _get(server, "/metrics")
    assert code == 200 and "# TYPE python_info gauge" in body, body[:500]
