"""`chimera api` as operators run it: keys made by `chimera api keys add`, the server a separate
process on the real broker; the key works, its secret appears in no log line, logs are JSON."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.kafka_helpers import free_port
from topics.admin import create_topics

pytestmark = [pytest.mark.integration]


def _get(url: str, key: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_chimera_api_serves_with_keys_from_the_cli(kafka_bootstrap, tmp_path):
    asyncio.run(create_topics(kafka_bootstrap))   # `chimera up` or the deployment's topics job does this
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "API_KEYS_FILE": str(tmp_path / "keys.json"),
           "API_PORT": str(port), "CHIMERA_LOG_LEVEL": "DEBUG"}
    made = subprocess.run([sys.executable, "-m", "streams.cli", "api", "keys", "add", "--tenant", "acme",
                           "--role", "viewer"], env=env, capture_output=True, text=True, check=True)
    key = made.stdout.strip().splitlines()[-1]
    made = subprocess.run([sys.executable, "-m", "streams.cli", "api", "keys", "add", "--tenant", "acme",
                           "--role", "planner"], env=env, capture_output=True, text=True, check=True)
    planner_key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("chk_") and key not in (tmp_path / "keys.json").read_text()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "api"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(f"{base}/api/v1/plans", key)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.3)
        assert status == 200 and body["items"] == [] and body["total"] == 0
        assert _get(f"{base}/api/v1/plans")[0] == 401
        assert _get(f"{base}/api/v1/plans", key[:-1] + "x")[0] == 401
        assert "/api/v1/plans" in _get(f"{base}/openapi.json")[1]["paths"]
        assert _get(f"{base}/health/live") == (200, {"status": "live"})   # infra/k8s/api.yaml's liveness
        status, body = _get(f"{base}/health/triton")
        assert status == 200 and body["status"] == "disabled"
        req = urllib.request.Request(f"{base}/api/v1/plans", method="POST", headers={
            "X-API-Key": planner_key, "Content-Type": "application/json"},
            data=json.dumps({"title": "Served goal", "goal_id": "served-1"}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            created = json.loads(r.read())
        assert r.status == 202
        with urllib.request.urlopen(f"{base}/metrics/", timeout=10) as m:
            metrics = m.read().decode()
        assert 'chimera_api_requests_total{method="POST",status="202"} 1.0' in metrics
        assert 'chimera_api_refusals_total{status="401"}' in metrics
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    for secret in (key, planner_key):
        assert secret not in text and secret.split("_")[2] not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "message"} <= set(l) for l in lines)
    write = [l for l in lines if l["logger"] == "chimera.api" and l["message"].startswith("POST /api/v1/plans")]
    assert write and write[0]["plan_id"] == created["plan_id"] and write[0]["trace_id"] == created["trace_id"]
    assert write[0]["key_id"] == planner_key.split("_")[1]
