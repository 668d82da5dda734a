"""Every Grafana panel's SQL, macros expanded as the ClickHouse plugin does, on the real
ClickHouse engine (chdb) filled by a real pipeline run: goals through the API, a planner
worker, approvals and feedback through the API, a resource and a dead letter, and the
ClickHouse sink consuming the topics. Each panel returns rows of the types its kind needs."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path
import uuid

import pytest
import yaml

from api.dashboards import DASHBOARDS, expand, panels, prometheus_queries
from processors import ids
from streams import client
from tests import sinks_fixtures as F
from tests.api.helpers import ENV, Keys, api_client, h, wait_for
from tests.executor_helpers import Executors, assignment, produce_assignments, task
from tests.kafka_helpers import produce
from topics import registry as T

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


def test_dashboards_are_valid_json_with_a_datasource_and_sql():
    files = sorted(DASHBOARDS.glob("*.json"))
    assert {f.stem for f in files} >= {"planning", "progress", "risks", "resources", "execution", "pipeline"}
    for f in files:
        d = json.loads(f.read_text())
        assert d["uid"].startswith("chimera-") and d["panels"]
        for p in d["panels"]:
            kind = p["datasource"]["type"]
            assert kind in ("grafana-clickhouse-datasource", "prometheus"), (f.name, p["title"])
            assert all(t["datasource"] == p["datasource"] for t in p["targets"]), (f.name, p["title"])
            assert all(t["rawSql"] if kind != "prometheus" else t["expr"] for t in p["targets"]), p["title"]
    sources = {yaml.safe_load(f.read_text())["datasources"][0]["uid"]: yaml.safe_load(f.read_text())["datasources"][0]
               for f in (DASHBOARDS.parent / "provisioning" / "datasources").glob("*.yml")}
    used = {(p["datasource"]["uid"], p["datasource"]["type"]) for f in files
            for p in json.loads(f.read_text())["panels"]}
    assert used == {(uid, s["type"]) for uid, s in sources.items()}, (used, sources)   # each provisioned


def test_the_issue_s_execution_and_pipeline_figures_have_panels():
    """Sandbox figures (fuel, memory, wall time, failures by reason) and lag (planner and sinks)."""
    titles = {(p.dashboard, p.title) for p in panels()} | {(p.dashboard, p.title) for p in prometheus_queries()}
    assert ("Chimera: execution and sandbox", "Sandbox: fuel, memory and wall time by module (completed tasks)") in titles
    assert ("Chimera: execution and sandbox", "Sandbox: failed tasks by reason") in titles
    exprs = " ".join(p.sql for p in prometheus_queries() if p.dashboard == "Chimera: pipeline health")
    assert "chimera_consumer_lag" in exprs and "chimera_sink_lag" in exprs


def test_expand_macros():
    sql = expand("SELECT $__timeInterval(ts) AS t FROM x WHERE $__timeFilter(ts) AND y < $__interval_s", 10, 20, 60)
    assert sql == ("SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS t FROM x WHERE "
                   "ts >= toDateTime(10) AND ts <= toDateTime(20) AND y < 60")
    with pytest.raises(ValueError):
        expand("SELECT $__unknown", 0, 1, 1)


def _goal(i: int, now_ms: int) -> dict:
    return {"goal_id": f"dash-{i}", "title": f"Dashboard goal {i}", "domain": "software",
            "constraints": {"deadline_ms": now_ms + 3_600_000},   # tight: timeline risks raised
            "tasks": [{"task_id": "a", "name": "Design", "duration_hours": 3, "resources": {"cpu": 2}},
                      {"task_id": "b", "name": "Build", "duration_hours": 4, "depends_on": ["a"],
                       "resources": {"cpu": 4}}]}


def test_every_panel_returns_typed_rows_from_a_pipeline_run(kafka_bootstrap, planner_stack, stores, tmp_path):
    from sinks.base import SinkRunner
    from sinks.clickhouse import ClickHouseSink, reader

    started = int(time.time())
    worker = planner_stack(**{**ENV, "PLANNING_AUTO_APPROVE_LOW_RISK_PLANS": "true",
                              "PLANNING_RESOURCE_HEARTBEAT_TIMEOUT_SECONDS": 900, "CHIMERA_LOG_FORMAT": "json"})
    keys = Keys()
    rid = f"dash-res-{uuid.uuid4().hex[:6]}"
    eid = f"dash-exec-{uuid.uuid4().hex[:6]}"
    executors = Executors(kafka_bootstrap, tmp_path / "executors")
    (tmp_path / "executors").mkdir()
    now_ms = int(time.time() * 1000)
    produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name,
            [(rid, {**F.resource(rid, {"cpu": 16.0}), "updated_at_ms": now_ms})])
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [("dash-bad", b"not avro at all")])   # a dead letter
    pids = []
    try:
        with api_client(kafka_bootstrap, keys) as c:
            for i in range(3):
                r = c.post("/api/v1/plans", json=_goal(i, now_ms), headers=h(keys.planner))
                assert r.status_code == 202, r.text
                pids.append(r.json()["plan_id"])
            for pid in pids:
                p = wait_for(lambda: c.get(f"/api/v1/plans/{pid}", headers=h(keys.viewer)).json(),
                             lambda p: p["approval"] is not None)
                if p["approval"] == "PENDING":
                    assert c.post(f"/api/v1/plans/{pid}/approve", headers=h(keys.approver)).status_code == 202
                st = wait_for(lambda: c.get("/api/v1/tasks/a/progress", params={"plan_id": pid},
                                            headers=h(keys.viewer)).json(), lambda s: s.get("state") == "ASSIGNED")
                assert st["state"] == "ASSIGNED", st
                assert c.put(f"/api/v1/plans/{pid}", json={"task_id": "a", "status": "COMPLETED",
                                                          "actual_hours": 3.5}, headers=h(keys.planner)).status_code == 202
            wait_for(lambda: c.get(f"/api/v1/plans/{pids[-1]}/progress", headers=h(keys.viewer)).json(),
                     lambda p: p["tasks_by_state"].get("COMPLETED") == 1)

        # the sandbox panels' figures: a real executor runs a task that completes (fuel, memory,
        # wall time in its feedback) and one whose module does not exist (a failure reason)
        asyncio.run(client.commit_at_end(kafka_bootstrap, f"chimera-executor.{eid}", [T.TASKS_ASSIGNED.name]))
        executors(eid, args=("--unassigned",))
        sandbox = [ids.plan_id(f"dash-sandbox-{eid}-{i}") for i in range(2)]
        produce_assignments(kafka_bootstrap, [
            assignment(sandbox[0], task("crunch", "Crunch numbers", description="wasm: compute 20000 1")),
            assignment(sandbox[1], task("bad", "Loop", description="wasm: no-such-module"))])

        sink = ClickHouseSink(tmp_path / "ch")
        runner = SinkRunner(sink, kafka_bootstrap, group=f"chimera-sink-dash-{uuid.uuid4().hex[:6]}",
                            batch_age_s=0.2)
        listed, sandboxed = "', '".join(pids), "', '".join(sandbox)
        with F.running(runner):
            F.wait_until(lambda: sink.store.query(
                f"SELECT count() FROM chimera.feedback FINAL WHERE plan_id IN ('{listed}') AND status = 'COMPLETED'"
            )[1][0][0] >= 3 and sink.store.query(
                "SELECT count() FROM chimera.dead_letters FINAL WHERE source_topic = 'goals.created'")[1][0][0] >= 1
                and sink.store.query(
                f"SELECT count() FROM chimera.feedback FINAL WHERE plan_id IN ('{sandboxed}') "
                "AND status IN ('COMPLETED', 'FAILED')")[1][0][0] >= 2,
                timeout=120, what="the run's feedback, the executor's and a dead letter in ClickHouse")
    finally:
        produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(rid, None)])   # the broker is shared
        executors.close()   # stops it and tombstones the resource it announced

    # the worker's logs are JSON lines; the dead letter names its goal
    lines = [json.loads(x) for x in worker.log_path.read_text().splitlines() if x.startswith("{")]
    assert any(x["logger"] == "chimera.app" and x["level"] == "warning" and x.get("goal_id") == "dash-bad"
               for x in lines), worker.log_tail(20)
    store = reader(tmp_path / "ch")
    # what the sandbox panels read: the completed task's JSON and the failure's reason
    cols, rows = store.query("SELECT JSONExtractString(message, 'module'), JSONExtractUInt(message, 'fuel'), "
                             "JSONExtractUInt(message, 'memory_bytes') FROM chimera.feedback FINAL "
                             f"WHERE plan_id = '{sandbox[0]}' AND status = 'COMPLETED'")
    assert rows and rows[0][0] == "compute" and rows[0][1] > 0 and rows[0][2] >= 65536, rows
    assert store.query("SELECT splitByString(': ', message)[1] FROM chimera.feedback FINAL "
                       f"WHERE plan_id = '{sandbox[1]}' AND status = 'FAILED'")[1] == [("module_not_found",)]
    checked = 0
    for panel in panels():
        sql = expand(panel.sql, started - 3600, int(time.time()) + 3600, 60)
        cols, rows = store.query(sql)
        assert rows, f"{panel.dashboard} / {panel.title}: no rows\n{sql}"
        numeric = [i for i, v in enumerate(rows[0]) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert numeric, f"{panel.dashboard} / {panel.title}: no numeric column in {cols}"
        if panel.type == "timeseries":
            assert cols[0] == "time" and all(isinstance(r[0], dt.datetime) for r in rows), (panel.title, rows[:2])
        checked += 1
    assert checked >= 20

    # `chimera report`: the same panels as PNG charts and one HTML page
    from api.report import render
    out = Path(os.environ.get("CHIMERA_REPORT_OUT") or tmp_path / "report")
    page = render(store, out, started - 3600, int(time.time()) + 3600, 60)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == checked and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)   # one per panel
    assert all(p.name in page.read_text() for p in pngs)

    # the same through the command line, as an operator runs it
    from typer.testing import CliRunner
    from streams.cli import app
    cli_out = tmp_path / "cli-report"
    res = CliRunner().invoke(app, ["report", "--since", "2h", "--out", str(cli_out), "--data-dir", str(tmp_path / "ch"),
                                   "--interval", "60"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in cli_out.glob("*.png")) == [p.name for p in pngs]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in cli_out.glob("*.png"))
    html = (cli_out / "index.html").read_text()
    assert all(f'<img src="{p.name}"' in html for p in pngs) and "no data in this window" not in html
    res = CliRunner().invoke(app, ["report", "--since", "yesterday", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "--since 'yesterday'" in res.output and not (tmp_path / "bad").exists()
