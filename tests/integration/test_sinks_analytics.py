"""Every analytics query template on chdb, with known answers (rows built by the sink's own code)."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from tests import sinks_fixtures as F
from topics import registry as T

pytestmark = [pytest.mark.integration]


def _rec(topic, value, offset, *, raw=None, headers=None, ts=F.T0):
    from sinks.base import SinkRecord
    return SinkRecord(topic, 0, offset, None, value, raw, headers or {}, ts)


def _history():
    g1 = F.goal("g1")
    g2 = F.goal("g2", budget=1000.0)
    p1 = F.plan("p1", "g1", risks=[F.risk("r1")], created_at_ms=F.T0 + 1000)
    p2 = F.plan("p2", "g2", tasks=[F.task("a", 0, 5)], cost=2000.0, created_at_ms=F.T0 + 3000,
                risks=[F.risk("r2", "RESOURCE", 0.8, "HIGH")])
    up = F.plan_update(p1, version=2, makespan=25.0)
    dlq = {"chimera.dlq.reason": b"not_avro", "chimera.source.topic": b"goals.created",
           "chimera.source.partition": b"0"}
    recs = [
        (T.GOALS_CREATED.name, g1), (T.GOALS_CREATED.name, g2), (T.PLANS_CREATED.name, p1),
        (T.PLANS_CREATED.name, p2), (T.PLANS_UPDATED.name, up), (T.RISKS_ALERTS.name, F.alert(p1, p1["risks"][0])),
        (T.TASKS_ASSIGNED.name, F.assignment(up["plan"], "t1", "exec-A")),
        (T.TASKS_ASSIGNED.name, F.assignment(up["plan"], "t2", "exec-A")),
        (T.TASKS_ASSIGNED.name, F.assignment(p2, "a", "exec-B")),
        (T.EXECUTION_FEEDBACK.name, F.feedback("p1", "t1", "STARTED")),
        (T.EXECUTION_FEEDBACK.name, F.feedback("p1", "t1", "COMPLETED", 12.0)),
        (T.EXECUTION_FEEDBACK.name, F.feedback("p1", "t2", "COMPLETED", 18.0, at_ms=F.T0 + 4000)),
        (T.EXECUTION_FEEDBACK.name, F.feedback("p2", "a", "FAILED", 1.0)),
        (T.RESOURCES_AVAILABILITY.name, F.resource("team-1", {"engineer": 2.0})),
    ]
    # Kafka timestamps: g1 at +100 ms, g2 at +200, p1 at +350, p2 at +1450: goal-to-plan 250 and 1250 ms
    # (the plans' own created_at, like the planner's, say nothing about when they were made)
    kafka_ts = {0: F.T0 + 100, 1: F.T0 + 200, 2: F.T0 + 350, 3: F.T0 + 1450}
    out = [_rec(t, F.check(t, v), i, ts=kafka_ts.get(i, F.T0)) for i, (t, v) in enumerate(recs)]
    out += [_rec("goals.created.dlq", None, i, raw=b"{bad", headers={**dlq, "chimera.source.offset": str(i).encode()})
            for i in range(2)]
    out.append(_rec(T.SINKS_DLQ.name, None, 0, raw=b"x", headers={
        "chimera.dlq.reason": b"schema_mismatch", "chimera.source.topic": b"plans.created",
        "chimera.source.partition": b"1", "chimera.source.offset": b"7", "chimera.dlq.sink": b"neo4j"}))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # twice, without dedup tokens: FINAL must still collapse the duplicates
    s = F.filled_store(tmp_path_factory.mktemp("analytics"), _history(), deliveries=2)
    yield s
    s.close()


def _q(store, name, **params):
    from sinks.analytics import run_dicts
    return run_dicts(store, name, **params)


def test_every_template_is_tested():
    from sinks.analytics import QUERIES
    tested = {n[len("test_"):] for n in globals() if n.startswith("test_")}
    assert set(QUERIES) <= tested


def test_planning_throughput(store):
    minute = datetime.fromtimestamp(F.T0 / 1000, tz=timezone.utc).replace(tzinfo=None)
    rows = _q(store, "planning_throughput", bucket_s=60)
    assert [(r["bucket"].replace(tzinfo=None), r["plans"]) for r in rows] == [(minute, 2)]
    assert _q(store, "planning_throughput", since_ms=F.T0 + 2000) [0]["plans"] == 1


def test_planning_latency(store):
    (r,) = _q(store, "planning_latency")
    assert (r["plans"], r["max_ms"]) == (2, 1250)
    assert r["p50_ms"] in (250, 1250) and r["p99_ms"] == 1250
    (r,) = _q(store, "planning_latency", since_ms=F.T0 + 1000)   # p2 only
    assert (r["plans"], r["max_ms"]) == (1, 1250)


def test_goal_achievement_rate(store):
    assert _q(store, "goal_achievement_rate") == [{"achieved": 1, "failed": 1, "finished": 2, "rate": 0.5}]


def test_schedule_budget_variance(store):
    rows = {r["plan_id"]: r for r in _q(store, "schedule_budget_variance")}
    assert rows["p1"]["makespan_hours"] == 25.0 and rows["p1"]["schedule_variance_hours"] == pytest.approx(-75.0)
    assert rows["p1"]["budget_variance"] == pytest.approx(-5000.0)
    assert rows["p2"]["schedule_variance_hours"] == pytest.approx(-95.0)
    assert rows["p2"]["budget_variance"] == pytest.approx(1000.0)


def test_risk_trends(store):
    rows = [(r["category"], r["risks"], r["avg_score"], r["severe"]) for r in _q(store, "risk_trends")]
    assert rows == [("RESOURCE", 1, 0.8, 1), ("TECHNICAL", 2, 0.3, 0)]


def test_resource_utilisation(store):
    (r,) = _q(store, "resource_utilisation")
    assert (r["resource"], r["plans"], r["tasks"], r["busy_unit_hours"], r["capacity"]) == ("engineer", 2, 3, 35.0, 2.0)
    assert r["utilisation"] == pytest.approx(35 / (2 * 30))
    assert r["cost"] == pytest.approx(7000.0)


def test_executor_performance(store):
    rows = {r["executor"]: r for r in _q(store, "executor_performance")}
    a, b = rows["exec-A"], rows["exec-B"]
    assert (a["tasks"], a["completed"], a["failed"], a["success_rate"]) == (2, 2, 0, 1.0)
    assert a["actual_vs_planned"] == pytest.approx((12 / 10 + 18 / 20) / 2)
    assert (b["tasks"], b["completed"], b["failed"], b["success_rate"]) == (1, 0, 1, 0.0)
    assert b["actual_vs_planned"] is None or math.isnan(b["actual_vs_planned"])


def test_dlq_reasons(store):
    rows = [(r["dlq_topic"], r["source_topic"], r["reason"], r["records"]) for r in _q(store, "dlq_reasons")]
    assert rows == [("goals.created.dlq", "goals.created", "not_avro", 2),
                    ("chimera.sinks.dlq", "plans.created", "schema_mismatch", 1)]
