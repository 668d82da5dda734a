"""The REST API end to end: a goal in through the API, planned by a real planner worker on the
real broker, approved, driven to completion by feedback through the API, reported; and every
refusal (401, 404 for another tenant, 403 for a role, 429 over the rate, 422 for a bad body)."""
from __future__ import annotations

import uuid

import pytest

from processors.ids import plan_id
from tests.api.helpers import ENV, GOAL, Keys, api_client, h, scrape, wait_for
from tests.kafka_helpers import collect, free_port
from topics.tracing import trace_id_of
from topics import registry as T

pytestmark = [pytest.mark.integration]


@pytest.mark.e2e
@pytest.mark.slow
def test_create_plan_approve_progress_report(kafka_bootstrap, planner_stack):
    """Also: the worker's /metrics move as the goal flows, and the goal's trace id is on its plan,
    its assignments and its feedback."""
    port = free_port()
    planner_stack(**ENV, CHIMERA_METRICS_PORT=port)
    keys = Keys()
    gid = f"g-{uuid.uuid4().hex[:8]}"
    before = wait_for(lambda: scrape(port), lambda m: m is not None, timeout=120)
    assert before is not None, "the worker serves no /metrics"
    with api_client(kafka_bootstrap, keys) as c:
        r = c.post("/api/v1/plans", json={**GOAL, "goal_id": gid}, headers=h(keys.planner))
        assert r.status_code == 202, r.text
        pid, trace_id = r.json()["plan_id"], r.json()["trace_id"]
        assert pid == plan_id(f"acme:{gid}") and r.json()["trace_id"]
        assert c.get(f"/api/v1/plans/{pid}", headers=h(keys.viewer)).json()["status"] in ("PLANNING", "ACTIVE")

        plan = wait_for(lambda: c.get(f"/api/v1/plans/{pid}", headers=h(keys.viewer)).json(),
                        lambda p: p["approval"] == "PENDING")
        assert plan["approval"] == "PENDING", plan
        assert plan["tenant"] == "acme" and plan["submitted_by"] == "pat@acme"
        assert [t["task_id"] for t in plan["plan"]["tasks"]] == ["design", "build"]

        r = c.post(f"/api/v1/plans/{pid}/approve", json={"reason": "looks right"}, headers=h(keys.approver))
        assert r.status_code == 202, r.text
        assert r.json()["by"] == "alice@acme"

        for task in ("design", "build"):
            st = wait_for(lambda: c.get(f"/api/v1/tasks/{task}/progress", params={"plan_id": pid},
                                        headers=h(keys.viewer)).json(),
                          lambda s: s.get("state") == "ASSIGNED")
            assert st["state"] == "ASSIGNED", st
            r = c.put(f"/api/v1/plans/{pid}", json={"task_id": task, "status": "COMPLETED", "actual_hours": 2.5},
                      headers=h(keys.planner))
            assert r.status_code == 202, r.text

        prog = wait_for(lambda: c.get(f"/api/v1/plans/{pid}/progress", headers=h(keys.viewer)).json(),
                        lambda p: p["status"] == "COMPLETED")
        assert prog["status"] == "COMPLETED" and prog["progress_pct"] == pytest.approx(100.0), prog
        assert prog["tasks_by_state"] == {"COMPLETED": 2}

        report = c.get(f"/api/v1/plans/{pid}/report", headers=h(keys.viewer)).json()
        assert report["approval"] == "APPROVED"
        assert [(a["decision"], a["by"]) for a in report["approvals"]] == [("APPROVE", "alice@acme")]
        assert {t["task_id"]: t["state"] for t in report["tasks"]} == {"design": "COMPLETED", "build": "COMPLETED"}
        assert report["progress"]["earned_value"] > 0

        listed = c.get("/api/v1/plans", params={"limit": 1}, headers=h(keys.viewer)).json()
        assert listed["limit"] == 1 and len(listed["items"]) == 1 and listed["total"] >= 1
        snap = c.get("/api/v1/metrics/snapshot", headers=h(keys.viewer)).json()
        assert snap["tenant"] == "acme" and snap["plans_by_status"].get("COMPLETED", 0) >= 1

    # every write is on the audit topic, naming the key's principal; no key appears anywhere
    audit = collect(kafka_bootstrap, T.API_AUDIT.name, lambda r: pid in r.value["target"], count=4, timeout=30)
    assert sorted((r.value["action"], r.value["principal"], r.value["status"]) for r in audit) == [
        ("approve", "alice@acme", 202), ("create_plan", "pat@acme", 202),
        ("feedback", "pat@acme", 202), ("feedback", "pat@acme", 202)]
    approvals = collect(kafka_bootstrap, T.PLANS_APPROVALS.name, lambda r: r.key == pid, count=1, timeout=30)
    assert approvals[0].value["by"] == "alice@acme"
    for rec in audit + approvals:
        for secret in (keys.planner, keys.approver, keys.viewer):
            assert secret.encode() not in rec.raw

    # one trace from the goal to its plan, its assignments (released by the approval) and its feedback
    for topic, n in ((T.GOALS_CREATED.name, 1), (T.PLANS_CREATED.name, 1), (T.TASKS_ASSIGNED.name, 2),
                     (T.EXECUTION_FEEDBACK.name, 2), (T.PLANS_APPROVALS.name, 1)):
        recs = collect(kafka_bootstrap, topic, lambda r: r.key in (pid, f"acme:{gid}"), count=n, timeout=30)
        assert len(recs) >= n and all(trace_id_of(r.headers.get("traceparent")) == trace_id for r in recs), \
            (topic, [r.headers.get("traceparent") for r in recs])

    after = scrape(port)
    for name in ("layer2_goals_received_total", "layer2_plans_created_total", "layer2_plans_updated_total",
                 "layer2_planning_duration_seconds_count", "layer2_task_decomposition_duration_seconds_count",
                 "layer2_risk_assessment_duration_seconds_count"):
        assert after.get(name, 0) > before.get(name, 0), name
    assert 'layer2_plan_progress_percentage{plan_id="%s"}' % pid not in after   # removed when it ended


def test_refusals_401_404_403_422(kafka_bootstrap):
    keys = Keys()
    with api_client(kafka_bootstrap, keys) as c:
        assert c.get("/api/v1/plans").status_code == 401
        r = c.get("/api/v1/plans", headers=h(keys.planner[:-2] + "xx"))
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
        assert c.get("/api/v1/plans", headers={"Authorization": f"Bearer {keys.viewer}"}).status_code == 200

        r = c.post("/api/v1/plans", json={**GOAL, "goal_id": f"g-{uuid.uuid4().hex[:8]}"}, headers=h(keys.planner))
        assert r.status_code == 202
        pid = r.json()["plan_id"]
        assert c.get(f"/api/v1/plans/{pid}", headers=h(keys.viewer)).status_code == 200
        # another tenant's plan does not exist for the caller, even for its admin
        for path in (f"/api/v1/plans/{pid}", f"/api/v1/plans/{pid}/progress", f"/api/v1/plans/{pid}/report"):
            r = c.get(path, headers=h(keys.other))
            assert r.status_code == 404 and r.json()["error"] == "not_found", path
        assert c.post(f"/api/v1/plans/{pid}/approve", headers=h(keys.other)).status_code == 404
        assert c.delete(f"/api/v1/plans/{pid}", headers=h(keys.other)).status_code == 404
        assert pid not in [p["plan_id"] for p in c.get("/api/v1/plans", headers=h(keys.other)).json()["items"]]

        # roles: a viewer may not approve nor create; a planner may not approve; an approver may not create
        r = c.post(f"/api/v1/plans/{pid}/approve", headers=h(keys.viewer))
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert c.post("/api/v1/plans", json=GOAL, headers=h(keys.viewer)).status_code == 403
        assert c.post(f"/api/v1/plans/{pid}/approve", headers=h(keys.planner)).status_code == 403
        assert c.post("/api/v1/plans", json=GOAL, headers=h(keys.approver)).status_code == 403

        # the approver is the key, never a field
        r = c.post(f"/api/v1/plans/{pid}/approve", json={"by": "mallory"}, headers=h(keys.approver))
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.by"
        r = c.post("/api/v1/plans", json={"domain": "software", "tasks": [{"task_id": "a"}]}, headers=h(keys.planner))
        body = r.json()
        assert r.status_code == 422 and body["error"] == "validation_error"
        assert {"body.title", "body.tasks.0.name", "body.tasks.0.duration_hours"} <= {f["field"] for f in body["fields"]}
        assert c.post("/api/v1/plans", json={**GOAL, "tenant": "globex"}, headers=h(keys.planner)).status_code == 422
        assert c.get(f"/api/v1/plans/{pid}/risks", params={"limit": 0}, headers=h(keys.viewer)).status_code == 422
        assert "/api/v1/plans/{plan_id}/approve" in c.get("/openapi.json").json()["paths"]

    denied = collect(kafka_bootstrap, T.API_AUDIT.name,
                     lambda r: r.value["target"] == pid and r.value["status"] == 403, count=2, timeout=30)
    assert {r.value["principal"] for r in denied} >= {"vic@acme", "pat@acme"}


def test_rate_limit_429_per_key(kafka_bootstrap):
    keys = Keys()
    with api_client(kafka_bootstrap, keys, per_minute=1, burst=3) as c:
        codes = [c.get("/api/v1/plans", headers=h(keys.viewer)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/api/v1/plans", headers=h(keys.viewer))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and r.json()["error"] == "rate_limited"
        assert c.get("/api/v1/plans", headers=h(keys.approver)).status_code == 200   # another key has its own
