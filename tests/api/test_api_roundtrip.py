"""The REST API end to end: a goal in through the API, planned by a real planner worker on the
real broker, approved, driven to completion by feedback through the API, reported; a plan
cancelled, its risks listed and mitigated, an allocation granted, a stale approval refused by
the planner; the worker's seed metrics moving with each; and every refusal (401, 404 for another
tenant, 403 for a role, 429 over the rate, 422 for a bad body).

One worker and one API serve the module's flow tests (`live`): starting them is most of the
cost. The worker's TRITON_URL names a port where nothing listens (Triton down): its estimator's
real gRPC client is refused, the integration error the seeds count."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest

from processors.ids import plan_id
from streams.services import Worker
from streams.simulate import resource_record
from tests.api.helpers import ENV, GOAL, Keys, api_client, h, scrape, wait_for
from tests.conftest import fresh_group
from tests.kafka_helpers import collect, free_port, produce
from topics.admin import create_topics
from topics.dlq import REASON
from topics.tracing import trace_id_of
from topics import registry as T

pytestmark = [pytest.mark.integration]


@dataclass
class Live:
    client: object
    keys: Keys
    port: int          # the worker's /metrics
    bootstrap: str
    worker: Worker

    def metrics(self) -> dict[str, float]:
        return scrape(self.port) or {}

    def submit(self, gid: str, **goal) -> str:
        r = self.client.post("/api/v1/plans", json={**GOAL, **goal, "goal_id": gid}, headers=h(self.keys.planner))
        assert r.status_code == 202, r.text
        return r.json()["plan_id"]

    def plan(self, pid: str, ok) -> dict:
        return wait_for(lambda: self.client.get(f"/api/v1/plans/{pid}", headers=h(self.keys.viewer)).json(), ok)


@pytest.fixture(scope="module")
def live(kafka_bootstrap, tmp_path_factory):
    asyncio.run(create_topics(kafka_bootstrap))
    app_id = f"chimera-api-rt-{uuid.uuid4().hex[:8]}"
    asyncio.run(fresh_group(kafka_bootstrap, app_id))
    port = free_port()
    env = {**ENV, "CHIMERA_METRICS_PORT": port, "TRITON_ENABLED": "true", "TRITON_URL": f"127.0.0.1:{free_port()}"}
    worker = Worker(kafka_bootstrap, env={k: str(v) for k, v in env.items()}, app_id=app_id,
                    log_path=tmp_path_factory.mktemp("api-rt") / "worker.log").start()
    keys = Keys()
    try:
        assert wait_for(lambda: scrape(port), lambda m: m is not None, timeout=120) is not None, \
            "the worker serves no /metrics"
        with api_client(kafka_bootstrap, keys) as c:
            yield Live(c, keys, port, kafka_bootstrap, worker)
    finally:
        worker.stop()
        if worker.log_path.exists():
            print(f"--- {worker.log_path.name} (tail) ---\n{worker.log_tail(60)}")


def _moved(before: dict, after: dict, name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


@pytest.mark.e2e
@pytest.mark.slow
def test_create_plan_approve_progress_report(live):
    """Also: the worker's /metrics move as the goal flows (the plan's progress gauge while it runs,
    removed when it ends), and the goal's trace
    id is on its plan, its assignments and its feedback."""
    c, keys, kafka_bootstrap = live.client, live.keys, live.bootstrap
    gid = f"g-{uuid.uuid4().hex[:8]}"
    before = live.metrics()
    r = c.post("/api/v1/plans", json={**GOAL, "goal_id": gid}, headers=h(keys.planner))
    assert r.status_code == 202, r.text
    pid, trace_id = r.json()["plan_id"], r.json()["trace_id"]
    assert pid == plan_id(f"acme:{gid}") and r.json()["trace_id"]
    assert c.get(f"/api/v1/plans/{pid}", headers=h(keys.viewer)).json()["status"] in ("PLANNING", "ACTIVE")

    plan = live.plan(pid, lambda p: p["approval"] == "PENDING")
    assert plan["approval"] == "PENDING", plan
    assert plan["tenant"] == "acme" and plan["submitted_by"] == "pat@acme"
    assert [t["task_id"] for t in plan["plan"]["tasks"]] == ["design", "build"]

    r = c.post(f"/api/v1/plans/{pid}/approve", json={"reason": "looks right"}, headers=h(keys.approver))
    assert r.status_code == 202, r.text
    assert r.json()["by"] == "alice@acme"

    gauge = 'layer2_plan_progress_percentage{plan_id="%s"}' % pid
    for task in ("design", "build"):
        st = wait_for(lambda: c.get(f"/api/v1/tasks/{task}/progress", params={"plan_id": pid},
                                    headers=h(keys.viewer)).json(),
                      lambda s: s.get("state") == "ASSIGNED")
        assert st["state"] == "ASSIGNED", st
        r = c.put(f"/api/v1/plans/{pid}", json={"task_id": task, "status": "COMPLETED", "actual_hours": 2.5},
                  headers=h(keys.planner))
        assert r.status_code == 202, r.text
        if task == "design":   # half-way: the live plan's progress is on the gauge
            m = wait_for(live.metrics, lambda m: 0 < m.get(gauge, 0) < 100, timeout=30)
            assert 0 < m.get(gauge, 0) < 100, {k: v for k, v in m.items() if "progress" in k}

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

    after = live.metrics()
    for name in ("layer2_goals_received_total", "layer2_plans_created_total", "layer2_plans_updated_total",
                 "layer2_planning_duration_seconds_count", "layer2_task_decomposition_duration_seconds_count",
                 "layer2_risk_assessment_duration_seconds_count", "layer2_risks_identified_total"):
        assert _moved(before, after, name) > 0, name
    assert gauge not in after   # removed when it ended


@pytest.mark.e2e
@pytest.mark.slow
def test_cancel_ends_the_plan_cancelled_by_a_control_record(live):
    """The goal names no tasks: the planner asks the estimator for the template's durations, and
    the Triton that is down is an integration error."""
    c, keys = live.client, live.keys
    before = live.metrics()
    pid = live.submit(f"cancel-{uuid.uuid4().hex[:8]}", tasks=[])
    plan = live.plan(pid, lambda p: p["approval"] == "PENDING")
    assert plan["approval"] == "PENDING" and plan["plan"]["estimates_source"] == "heuristic:fallback", plan
    assert _moved(before, live.metrics(), 'layer2_integration_errors_total{integration="inference"}') > 0
    assert c.delete(f"/api/v1/plans/{pid}", headers=h(keys.viewer)).status_code == 403
    r = c.delete(f"/api/v1/plans/{pid}", params={"reason": "not needed any more"}, headers=h(keys.planner))
    assert r.status_code == 202 and r.json() == {"plan_id": pid, "command": "CANCEL", "status": "ACCEPTED"}, r.text

    prog = wait_for(lambda: c.get(f"/api/v1/plans/{pid}/progress", headers=h(keys.viewer)).json(),
                    lambda p: p["status"] == "CANCELLED")
    assert prog["status"] == "CANCELLED", prog
    report = c.get(f"/api/v1/plans/{pid}/report", headers=h(keys.viewer)).json()
    assert [(x["command"], x["issued_by"], x["reason"]) for x in report["commands"]] == [
        ("CANCEL", "pat@acme", "not needed any more")]
    control = collect(live.bootstrap, T.CONTROL_COMMANDS.name, lambda r: r.key == pid, count=1, timeout=30)
    assert [(r.value["command"], r.value["issued_by"]) for r in control] == [("CANCEL", "pat@acme")]
    audit = collect(live.bootstrap, T.API_AUDIT.name, lambda r: r.value["target"] == pid and r.value["action"] == "cancel",
                    count=2, timeout=30, settle=0.5)
    assert sorted((r.value["principal"], r.value["status"]) for r in audit) == [("pat@acme", 202), ("vic@acme", 403)]


@pytest.mark.e2e
@pytest.mark.slow
def test_risks_paginated_mitigated_an_allocation_granted_and_a_stale_approval_refused(live):
    """A tight deadline gives the plan risks (listed, filtered, paginated; one mitigated, audited,
    in the report); a resource of its own is granted the tasks; an approval of a superseded
    version is a planning error (dead-lettered with its reason). Each moves its seed metric."""
    c, keys, bs = live.client, live.keys, live.bootstrap
    run = uuid.uuid4().hex[:8]
    cap, rid = f"cap-{run}", f"r-api-{run}"
    produce(bs, T.RESOURCES_AVAILABILITY.name, [(rid, resource_record(rid, capabilities=[cap], agents=2))])
    try:
        time.sleep(1.5)   # the worker's global resource table has it
        before = live.metrics()
        tasks = [{**t, "capabilities": [cap]} for t in GOAL["tasks"]]
        pid = live.submit(f"risky-{run}", tasks=tasks,
                          constraints={"deadline_ms": int(time.time() * 1000) + 3_600_000})
        assert live.plan(pid, lambda p: p["approval"] == "PENDING")["approval"] == "PENDING"
        created = collect(bs, T.PLANS_CREATED.name, lambda r: r.key == pid, count=1, timeout=30)[0].value

        risks = c.get(f"/api/v1/plans/{pid}/risks", headers=h(keys.viewer)).json()
        assert {r["risk_id"] for r in risks["items"]} == {r["risk_id"] for r in created["risks"]}
        n = risks["total"]
        assert n >= 2 and "timeline-deadline" in {r["risk_id"] for r in risks["items"]}, risks
        scores = [r["score"] for r in risks["items"]]
        assert scores == sorted(scores, reverse=True)
        first = c.get(f"/api/v1/plans/{pid}/risks", params={"limit": 1}, headers=h(keys.viewer)).json()
        assert (len(first["items"]), first["total"], first["next_offset"]) == (1, n, 1)
        last = c.get(f"/api/v1/plans/{pid}/risks", params={"limit": 1, "offset": n - 1}, headers=h(keys.viewer)).json()
        assert last["items"] == risks["items"][-1:] and last["next_offset"] is None
        crit = c.get(f"/api/v1/plans/{pid}/risks", params={"min_severity": "CRITICAL"}, headers=h(keys.viewer)).json()
        assert crit["items"] and {r["severity"] for r in crit["items"]} == {"CRITICAL"} and crit["total"] < n
        assert c.get(f"/api/v1/plans/{pid}/risks", headers=h(keys.other)).status_code == 404

        after = live.metrics()
        for sev, k in Counter(r["severity"] for r in created["risks"]).items():
            assert _moved(before, after, f'layer2_risks_identified_total{{severity="{sev}"}}') >= k, sev

        # a mitigation: 202, audited with its plan and action, listed by the plan's report
        target = risks["items"][0]["risk_id"]
        body = {"plan_id": pid, "action": "add a buffer week", "note": "agreed with the client"}
        assert c.post(f"/api/v1/risks/{target}/mitigate", json=body, headers=h(keys.viewer)).status_code == 403
        assert c.post("/api/v1/risks/no-such-risk/mitigate", json=body, headers=h(keys.planner)).status_code == 404
        r = c.post(f"/api/v1/risks/{target}/mitigate", json=body, headers=h(keys.planner))
        assert r.status_code == 202 and r.json() == {"risk_id": target, "plan_id": pid, "status": "ACCEPTED"}, r.text
        report = c.get(f"/api/v1/plans/{pid}/report", headers=h(keys.viewer)).json()
        assert [(m["risk_id"], m["action"], m["note"], m["by"]) for m in report["mitigations"]] == [
            (target, "add a buffer week", "agreed with the client", "pat@acme")]
        audit = collect(bs, T.API_AUDIT.name, lambda r: r.value["action"] == "mitigate" and r.value["status"] == 202
                        and json.loads(r.value["detail"])["plan_id"] == pid, count=1, timeout=30)
        assert audit[0].value["target"] == target and audit[0].value["principal"] == "pat@acme"
        assert json.loads(audit[0].value["detail"])["action"] == "add a buffer week"

        # approved: the first task is granted on the resource of its capability
        assert c.post(f"/api/v1/plans/{pid}/approve", headers=h(keys.approver)).status_code == 202
        st = wait_for(lambda: c.get("/api/v1/tasks/design/progress", params={"plan_id": pid},
                                    headers=h(keys.viewer)).json(), lambda s: s.get("state") == "ASSIGNED")
        assert st["state"] == "ASSIGNED" and st["assigned_to"] == rid, st
        m = wait_for(live.metrics, lambda m: _moved(before, m, "layer2_resource_allocations_successful_total") > 0,
                     timeout=30)
        assert _moved(before, m, "layer2_resource_allocations_successful_total") > 0

        # an approval of the superseded version: the API knows it is (409); one that reaches the
        # topic all the same (another writer) is refused by the planner: stale_version, a planning error
        plan = live.plan(pid, lambda p: p["approval"] == "APPROVED")
        assert plan["approval"] == "APPROVED" and plan["version"] > 1, plan
        r = c.post(f"/api/v1/plans/{pid}/approve", json={"version": plan["version"] - 1}, headers=h(keys.approver))
        assert r.status_code == 409 and r.json()["error"] == "stale_version", r.text
        produce(bs, T.PLANS_APPROVALS.name, [(pid, {"plan_id": pid, "version": plan["version"] - 1,
                                                    "decision": "APPROVE", "by": "someone-else", "reason": "",
                                                    "decided_at_ms": int(time.time() * 1000)})])
        dead = collect(bs, T.PLANS_APPROVALS.dlq, lambda r: r.key == pid, count=1, timeout=30)
        assert dead and dead[0].headers[REASON] == "stale_version", dead
        m = wait_for(live.metrics, lambda m: _moved(before, m, 'layer2_planning_errors_total{reason="stale_version"}') > 0,
                     timeout=30)
        assert _moved(before, m, 'layer2_planning_errors_total{reason="stale_version"}') == 1
    finally:
        produce(bs, T.RESOURCES_AVAILABILITY.name, [(rid, None)])   # the broker is shared


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
