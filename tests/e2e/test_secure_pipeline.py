"""The pipeline on a broker that authenticates and authorises: the planner worker as the
`planner` principal over SCRAM-SHA-512, the API as `api` over PLAIN, a real executor as
`executor`, every client configured by KAFKA_SECURITY_* settings; a goal through the API is
planned, approved, its first task run in the executor's sandbox and reported COMPLETED (its
transaction under the executor's ACLs), the planner reading that feedback; no password reaches
the worker's, the executor's, the API's or the broker's log."""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from executor.build import toolchain_missing
from infra.process import terminate
from infra.kafka.secure import SCRAM, SecureKafkaBroker, apply_acls, default_acls
from streams.services import Worker
from tests.api.helpers import ENV, GOAL, Keys, api_client, h, wait_for
from tests.conftest import fresh_group
from topics import security
from topics.admin import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(toolchain_missing() is not None and not os.environ.get("CI"),
                                 reason=f"WASI toolchain: {toolchain_missing()} (run `make modules`)")]
REPO = Path(__file__).resolve().parents[2]
USERS = {"admin": "admin-pw", "api": "api-pw", "planner": "planner-pw", "executor": "executor-pw"}


def test_api_and_planner_under_sasl_and_acls(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)   # the API runs in this process: its log is caplog's
    app_id = f"chimera-planner-sasl-{uuid.uuid4().hex[:6]}"
    with SecureKafkaBroker(USERS, data_dir=tmp_path / "kafka") as broker:
        bs = broker.bootstrap
        for k, v in broker.client_env("admin").items():
            monkeypatch.setenv(k, v)
        asyncio.run(create_topics(bs))
        apply_acls(bs, security.confluent(), default_acls(app_id))
        asyncio.run(fresh_group(bs, app_id))
        planner_env = broker.client_env("planner", mechanism=SCRAM)
        worker = Worker(bs, env={**{k: str(v) for k, v in ENV.items()}, **planner_env}, app_id=app_id,
                        log_path=tmp_path / "worker.log").start()
        ex_log = open(tmp_path / "executor.log", "w")
        executor = subprocess.Popen(
            [sys.executable, "-m", "executor.service", "--bootstrap", bs, "--id", "ex-sasl", "--slots", "2",
             "--heartbeat-s", "1", "--unassigned", "--work-root", str(tmp_path / "executor")],
            cwd=REPO, stdout=ex_log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), **broker.client_env("executor")})
        try:
            keys = Keys()
            api_conf = security.confluent(broker.client_env("api"))
            with api_client(bs, keys, kafka_config=api_conf) as c:
                r = wait_for(lambda: c.post("/api/v1/plans", json={**GOAL, "goal_id": "sasl-1"},
                                            headers=h(keys.planner)),
                             lambda r: r.status_code == 202, timeout=60)   # ACLs reach the authorizer first
                assert r.status_code == 202, r.text
                pid = r.json()["plan_id"]
                plan = wait_for(lambda: c.get(f"/api/v1/plans/{pid}", headers=h(keys.viewer)).json(),
                                lambda p: p["approval"] == "PENDING", timeout=120)
                assert plan["approval"] == "PENDING", (plan, worker.log_tail(40))
                assert c.post(f"/api/v1/plans/{pid}/approve", headers=h(keys.approver)).status_code == 202
                st = wait_for(lambda: c.get("/api/v1/tasks/design/progress", params={"plan_id": pid},
                                            headers=h(keys.viewer)).json(), lambda s: s.get("state") == "ASSIGNED")
                assert st["state"] in ("ASSIGNED", "STARTED", "COMPLETED"), (st, worker.log_tail(40))
                st = wait_for(lambda: c.get("/api/v1/tasks/design/progress", params={"plan_id": pid},
                                            headers=h(keys.viewer)).json(), lambda s: s.get("state") == "COMPLETED",
                              timeout=120)
                assert st["state"] == "COMPLETED" and st["assigned_to"] in (None, "ex-sasl"), \
                    (st, (tmp_path / "executor.log").read_text(errors="replace")[-3000:])
        finally:
            terminate(executor, 20)
            ex_log.close()
            worker.stop()
        logs = {"the planner worker's log": (tmp_path / "worker.log").read_text(errors="replace"),
                "the executor's log": (tmp_path / "executor.log").read_text(errors="replace"),
                "the API's log": caplog.text, "the broker's log": broker.tail_log(100_000)}
    assert all(logs.values()), "a log is empty: its missing password would prove nothing"
    for where, text in logs.items():
        leaked = [u for u, pw in USERS.items() if pw in text]
        lines = [ln for ln in text.splitlines() if any(USERS[u] in ln for u in leaked)]
        assert not leaked, (f"the password of {leaked} appears in {where}", lines[:5])
