"""The REST API (FastAPI): writes go to Kafka, reads come from the API's own view of the topics.

Every request names an API key (X-API-Key or `Authorization: Bearer`); the key gives the
tenant, the role and the principal. A plan of another tenant does not exist for the caller
(404). Every write is recorded on `api.audit` with who, what and when.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Callable, Optional

from prometheus_client import Counter, make_asgi_app
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.keys import ApiKey, KeyStore
from api.models import ApprovalIn, FeedbackIn, GoalIn, MitigateIn
from api.ratelimit import RateLimiter
from api.store import PlanView, Store, plan_risks
from api.writer import WriteFailed, Writer
from processors.ids import event_id
from processors.ids import plan_id as derive_plan_id
from streams import codec
from topics import tracing
from streams.settings import ApiSettings
from topics import registry as T
from topics.serde import SerdeError

log = logging.getLogger("chimera.api")
REQUESTS = Counter("chimera_api_requests_total", "API requests answered, by method and status", ["method", "status"])
REFUSED = Counter("chimera_api_refusals_total", "Requests refused before acting (401, 403, 404, 429)", ["status"])
AUDIT_FAILURES = Counter("chimera_api_audit_failures_total", "Writes whose audit record the broker did not take")
WRITES = ("POST", "PUT", "DELETE", "PATCH")
SEVERITY = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "CRITICAL": 3}


@dataclass
class Deps:
    """What the app talks to; tests build it against the real broker."""
    settings: ApiSettings
    keys: KeyStore
    store: Store
    writer: Writer
    limiter: RateLimiter
    view: Any = None                          # api.view.View (started and stopped with the app)
    health: Optional[Callable[[], dict]] = None


def _now_ms() -> int:
    return int(time.time() * 1000)


def create_app(deps: Deps) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        if deps.view is not None and deps.view._thread is None:
            deps.view.start()
        yield
        if deps.view is not None:
            deps.view.stop()
        deps.writer.close()

    app = FastAPI(title="Chimera planning API", version="1.0.0", lifespan=lifespan,
                  description="Goals in through Kafka; plans, progress, risks and reports out of the API's "
                              "materialised view of the plan topics. Authenticate with an API key.")
    app.state.deps = deps
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    # -- errors: one shape for every 4xx/5xx ----------------------------------------------

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
        return JSONResponse({"error": "validation_error", "message": f"invalid request: {summary}",
                             "status": 422, "fields": fields}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, dict) else {"error": _code(exc.status_code),
                                                                  "message": str(exc.detail)}
        return JSONResponse({**detail, "status": exc.status_code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    # -- audit: every write that named a valid key ---------------------------------------

    @app.middleware("http")
    async def audit(request: Request, call_next):
        response = await call_next(request)
        REQUESTS.labels(request.method, str(response.status_code)).inc()
        if response.status_code in (401, 403, 404, 429):
            REFUSED.labels(str(response.status_code)).inc()
        key: ApiKey | None = getattr(request.state, "key", None)
        if request.method in WRITES and key is not None:
            record = {"event_id": str(uuid.uuid4()), "at_ms": _now_ms(), "tenant": key.tenant, "key_id": key.key_id,
                      "principal": key.principal, "role": key.role,
                      "action": getattr(request.state, "action", "") or request.url.path,
                      "method": request.method, "path": request.url.path,
                      "target": getattr(request.state, "target", ""), "status": response.status_code,
                      "detail": getattr(request.state, "detail", ""),
                      "trace_id": getattr(request.state, "trace_id", "")}
            target = record["target"]
            log.info("%s %s -> %s", request.method, request.url.path, response.status_code,
                     extra={"trace_id": record["trace_id"], "key_id": key.key_id, "tenant": key.tenant,
                            "plan_id": target.split("/")[0] if target.startswith("plan-") else ""})
            try:
                await run_in_threadpool(deps.writer.send, T.API_AUDIT.name, key.tenant, record)
                if record["status"] < 300 and record["action"] == "mitigate":
                    deps.store.apply(T.API_AUDIT.name, key.tenant, record)
            except (WriteFailed, SerdeError) as exc:
                AUDIT_FAILURES.inc()
                log.error("audit record of %s %s by key %s not written: %s", request.method, request.url.path,
                          key.key_id, exc)
        return response

    # -- who is asking -------------------------------------------------------------------

    def caller(request: Request, api_key: Optional[str] = Depends(key_header),
               auth: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> ApiKey:
        presented = api_key or (auth.credentials if auth else None)
        key = deps.keys.authenticate(presented)
        if key is None:
            raise HTTPException(401, {"error": "unauthenticated",
                                      "message": "a valid API key is required (X-API-Key or Authorization: Bearer)"},
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.key = key
        wait = deps.limiter.take(key.key_id)
        if wait > 0:
            raise HTTPException(429, {"error": "rate_limited",
                                      "message": f"key {key.key_id} is over its rate limit; retry in {wait:.1f} s"},
                                headers={"Retry-After": str(max(1, round(wait)))})
        return key

    def need(permission: str, action: str = ""):
        def check(request: Request, key: ApiKey = Depends(caller)) -> ApiKey:
            request.state.action = action
            request.state.target = request.path_params.get("plan_id") or request.path_params.get("risk_id") or ""
            if not key.may(permission):
                raise HTTPException(403, {"error": "forbidden",
                                          "message": f"role {key.role!r} may not {action or permission}"})
            return key
        return check

    def owned(pid: str, key: ApiKey) -> PlanView:
        view = deps.store.get(pid)
        if view is None or view.tenant != key.tenant or view.goal is None:
            raise HTTPException(404, {"error": "not_found", "message": f"no plan {pid}"})
        return view

    def write(request: Request, topic: str, key: str, value: dict, plan: PlanView | None = None) -> dict:
        """Send one record; its trace continues the caller's traceparent, else the plan's goal's."""
        parent = request.headers.get("traceparent") or (plan.traceparent if plan else None)
        headers, trace_id = tracing.outgoing(parent, f"api.{topic}")
        request.state.trace_id = trace_id
        try:
            deps.writer.send(topic, key, value, headers)
        except SerdeError as exc:
            raise HTTPException(422, {"error": "invalid_record", "message": str(exc)}) from None
        except WriteFailed as exc:
            raise HTTPException(503, {"error": "broker_unavailable", "message": str(exc)}) from None
        return headers

    def page(items: list, limit: Optional[int], offset: int) -> dict:
        limit = limit or deps.settings.page_size
        chunk = items[offset:offset + limit]
        nxt = offset + limit if offset + limit < len(items) else None
        return {"items": chunk, "total": len(items), "limit": limit, "offset": offset, "next_offset": nxt}

    Limit = Query(None, ge=1, le=deps.settings.max_page_size, description="page size")
    Offset = Query(0, ge=0, description="items to skip")

    # -- plans ---------------------------------------------------------------------------

    @app.post("/api/v1/plans", status_code=202, tags=["plans"])
    def create_plan(goal: GoalIn, request: Request, key: ApiKey = Depends(need("plan", "create_plan"))):
        """Produce the goal to goals.created; the plan id is returned at once (planning is asynchronous)."""
        gid = f"{key.tenant}:{goal.goal_id or uuid.uuid4().hex}"
        pid = derive_plan_id(gid)
        existing = deps.store.get(pid)
        if existing is not None and existing.goal is not None:
            raise HTTPException(409, {"error": "conflict", "message": f"goal {goal.goal_id} was submitted already",
                                      "plan_id": pid})
        record = {**goal.model_dump(exclude={"goal_id"}), "goal_id": gid, "tenant": key.tenant,
                  "submitted_by": key.principal, "created_at_ms": _now_ms()}
        request.state.target = pid
        headers = write(request, T.GOALS_CREATED.name, gid, record)
        deps.store.note_goal(record, headers.get("traceparent"))
        return {"plan_id": pid, "goal_id": gid, "status": "ACCEPTED", "trace_id": request.state.trace_id,
                "links": {"plan": f"/api/v1/plans/{pid}", "progress": f"/api/v1/plans/{pid}/progress"}}

    @app.get("/api/v1/plans", tags=["plans"])
    def list_plans(key: ApiKey = Depends(need("read")), status: Optional[str] = None,
                   limit: Optional[int] = Limit, offset: int = Offset):
        """The caller's tenant's plans, oldest first."""
        views = [v for v in deps.store.of_tenant(key.tenant) if status is None or v.status == status]
        return page([_summary(v) for v in views], limit, offset)

    @app.get("/api/v1/plans/{plan_id}", tags=["plans"])
    def get_plan(plan_id: str, key: ApiKey = Depends(need("read"))):
        view = owned(plan_id, key)
        return {**_summary(view), "plan": view.plan}

    @app.put("/api/v1/plans/{plan_id}", status_code=202, tags=["plans"])
    def feedback(plan_id: str, body: FeedbackIn, request: Request, key: ApiKey = Depends(need("plan", "feedback"))):
        """Execution feedback on one of the plan's tasks, to execution.feedback."""
        view = owned(plan_id, key)
        request.state.target = f"{plan_id}/{body.task_id}"
        if view.plan is None:
            raise HTTPException(409, {"error": "not_planned", "message": f"{plan_id} has no plan yet"})
        if all(t["task_id"] != body.task_id for t in view.plan["tasks"]):
            raise HTTPException(404, {"error": "not_found", "message": f"{plan_id} has no task {body.task_id}"})
        attempt = body.attempt or (view.assignments.get(body.task_id) or {}).get("attempt")
        if attempt is None:
            raise HTTPException(409, {"error": "not_assigned", "message": f"task {body.task_id} is not assigned yet"})
        at = _now_ms()
        record = {"event_id": event_id("api-feedback", plan_id, body.task_id, body.status, attempt, uuid.uuid4()),
                  "plan_id": plan_id, "task_id": body.task_id, "status": body.status,
                  "progress_pct": 100.0 if body.status == "COMPLETED" else body.progress_pct,
                  "actual_hours": body.actual_hours, "message": body.message, "reported_at_ms": at,
                  "attempt": attempt, "produced": None}
        write(request, T.EXECUTION_FEEDBACK.name, plan_id, record, view)
        return {"plan_id": plan_id, "task_id": body.task_id, "attempt": attempt, "status": "ACCEPTED"}

    @app.post("/api/v1/plans/{plan_id}/approve", status_code=202, tags=["plans"])
    def approve(plan_id: str, request: Request, body: ApprovalIn = ApprovalIn(),
                key: ApiKey = Depends(need("approve", "approve"))):
        """Approve (or reject) the plan's current PENDING version; the approver is the key's principal."""
        view = owned(plan_id, key)
        request.state.target = plan_id
        if view.plan is None:
            raise HTTPException(409, {"error": "not_planned", "message": f"{plan_id} has no plan yet"})
        version = body.version or view.version
        if version < view.version:   # known superseded: the planner would only dead-letter it
            raise HTTPException(409, {"error": "stale_version",
                                      "message": f"{plan_id} is at v{view.version}; v{version} is superseded"})
        if version == view.version and view.approval != "PENDING":
            raise HTTPException(409, {"error": "not_pending",
                                      "message": f"{plan_id} v{version} is {view.approval}, not PENDING"})
        record = {"plan_id": plan_id, "version": version, "decision": body.decision, "by": key.principal,
                  "reason": body.reason, "decided_at_ms": _now_ms()}
        request.state.detail = body.decision
        write(request, T.PLANS_APPROVALS.name, plan_id, record, view)
        return {"plan_id": plan_id, "version": version, "decision": body.decision, "by": key.principal,
                "status": "ACCEPTED"}

    @app.delete("/api/v1/plans/{plan_id}", status_code=202, tags=["plans"])
    def cancel(plan_id: str, request: Request, reason: str = Query("", max_length=2000),
               key: ApiKey = Depends(need("plan", "cancel"))):
        """Cancel the plan: a CANCEL on control.commands (the planner and executors honour it)."""
        view = owned(plan_id, key)
        request.state.target = plan_id
        out = codec.control_record("CANCEL", plan_id, reason=reason, by=key.principal, at_ms=_now_ms())
        write(request, out.topic, out.key, out.value, view)
        return {"plan_id": plan_id, "command": "CANCEL", "status": "ACCEPTED"}

    @app.get("/api/v1/plans/{plan_id}/progress", tags=["progress"])
    def progress(plan_id: str, key: ApiKey = Depends(need("read"))):
        return _progress(owned(plan_id, key))

    @app.get("/api/v1/tasks/{task_id}/progress", tags=["progress"])
    def task_progress(task_id: str, plan_id: Optional[str] = None, key: ApiKey = Depends(need("read"))):
        """A task's state; task ids are unique within a plan, so `plan_id` is needed when several plans have it."""
        views = [owned(plan_id, key)] if plan_id else deps.store.of_tenant(key.tenant)
        hits = [v for v in views if v.plan and any(t["task_id"] == task_id for t in v.plan["tasks"])]
        if not hits:
            raise HTTPException(404, {"error": "not_found", "message": f"no task {task_id}"})
        if len(hits) > 1:
            raise HTTPException(409, {"error": "ambiguous", "message": f"task {task_id} is in {len(hits)} plans: "
                                      "name one with ?plan_id=", "plan_ids": [v.plan_id for v in hits[:20]]})
        return {"plan_id": hits[0].plan_id, **hits[0].task_state(task_id)}

    @app.get("/api/v1/plans/{plan_id}/report", tags=["progress"])
    def report(plan_id: str, key: ApiKey = Depends(need("read"))):
        """Everything about one plan: summary, progress and earned value, tasks, risks, decisions."""
        view = owned(plan_id, key)
        plan = view.plan or {}
        return {**_summary(view), "progress": _progress(view),
                "schedule": {k: plan.get(k) for k in ("makespan_hours", "lower_bound_hours", "critical_path",
                                                      "schedule_method", "strategy")},
                "cost": plan.get("cost"), "phases": plan.get("phases", []), "milestones": plan.get("milestones", []),
                "tasks": [dict(view.task_state(t["task_id"]), name=t["name"], start_hours=t["start_hours"],
                               finish_hours=t["finish_hours"]) for t in plan.get("tasks", [])],
                "risks": plan_risks(view), "approvals": view.approvals,
                "commands": [{k: c[k] for k in ("command", "issued_by", "reason", "issued_at_ms")}
                             for c in view.commands],
                "mitigations": [_mitigation(m) for m in view.mitigations]}

    @app.get("/api/v1/plans/{plan_id}/risks", tags=["risks"])
    def risks(plan_id: str, key: ApiKey = Depends(need("read")), min_severity: Optional[str] = None,
              limit: Optional[int] = Limit, offset: int = Offset):
        view = owned(plan_id, key)
        if min_severity is not None and min_severity not in SEVERITY:
            raise HTTPException(422, {"error": "validation_error",
                                      "message": f"min_severity must be one of {', '.join(SEVERITY)}"})
        items = [r for r in plan_risks(view) if SEVERITY[r["severity"]] >= SEVERITY.get(min_severity or "LOW", 0)]
        items.sort(key=lambda r: -r["score"])
        return page(items, limit, offset)

    @app.post("/api/v1/risks/{risk_id}/mitigate", status_code=202, tags=["risks"])
    def mitigate(risk_id: str, body: MitigateIn, request: Request, key: ApiKey = Depends(need("plan", "mitigate"))):
        """Record what is done about a risk (on api.audit; the plan's report lists it). The planner does not
        act on it yet: a mitigation task is added by a goal or a replan."""
        views = [owned(body.plan_id, key)] if body.plan_id else deps.store.of_tenant(key.tenant)
        hits = [v for v in views if any(r["risk_id"] == risk_id for r in plan_risks(v))]
        if not hits:
            raise HTTPException(404, {"error": "not_found", "message": f"no risk {risk_id}"})
        if len(hits) > 1:
            raise HTTPException(409, {"error": "ambiguous", "message": f"risk {risk_id} is in {len(hits)} plans: "
                                      "name one with plan_id", "plan_ids": [v.plan_id for v in hits[:20]]})
        request.state.target = risk_id
        request.state.detail = json.dumps({"plan_id": hits[0].plan_id, "action": body.action, "note": body.note})
        return {"risk_id": risk_id, "plan_id": hits[0].plan_id, "status": "ACCEPTED"}

    @app.get("/api/v1/metrics/snapshot", tags=["metrics"])
    def snapshot(key: ApiKey = Depends(need("read"))):
        """Counts over the caller's tenant's plans, from the view."""
        views = deps.store.of_tenant(key.tenant)
        by_status: dict[str, int] = {}
        by_approval: dict[str, int] = {}
        tasks: dict[str, int] = {}
        sev: dict[str, int] = {}
        progress_sum = 0.0
        for v in views:
            by_status[v.status] = by_status.get(v.status, 0) + 1
            if v.approval:
                by_approval[v.approval] = by_approval.get(v.approval, 0) + 1
            for t in (v.plan or {}).get("tasks", []):
                s = v.task_state(t["task_id"])["state"]
                tasks[s] = tasks.get(s, 0) + 1
            for r in plan_risks(v):
                sev[r["severity"]] = sev.get(r["severity"], 0) + 1
            progress_sum += (v.update or {}).get("progress_pct", 0.0)
        view = deps.view
        return {"tenant": key.tenant, "plans": len(views), "plans_by_status": by_status,
                "plans_by_approval": by_approval, "tasks_by_state": tasks, "risks_by_severity": sev,
                "mean_progress_pct": progress_sum / len(views) if views else 0.0,
                "view": {"ready": bool(view and view.ready.is_set()), "lag": getattr(view, "lag", 0),
                         "records": getattr(view, "records", 0)}, "at_ms": _now_ms()}

    if deps.health is not None:
        from api import health
        health.mount(app, deps)
    app.mount("/metrics", make_asgi_app())   # Prometheus, like every worker kind (no key: no tenant data)
    return app


def _code(status: int) -> str:
    return {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
            409: "conflict", 422: "validation_error", 429: "rate_limited"}.get(status, "error")


def _summary(v: PlanView) -> dict:
    g = v.goal or {}
    return {"plan_id": v.plan_id, "goal_id": g.get("goal_id"), "title": g.get("title"), "tenant": v.tenant,
            "submitted_by": g.get("submitted_by"), "submitted_at_ms": v.submitted_at_ms, "status": v.status,
            "approval": v.approval, "version": v.version,
            "progress_pct": (v.update or {}).get("progress_pct", 0.0)}


def _progress(v: PlanView) -> dict:
    u = v.update or {}
    states: dict[str, int] = {}
    for t in (v.plan or {}).get("tasks", []):
        s = v.task_state(t["task_id"])["state"]
        states[s] = states.get(s, 0) + 1
    return {"plan_id": v.plan_id, "status": v.status, "version": v.version,
            **{k: u.get(k, d) for k, d in (("progress_pct", 0.0), ("variance_hours", 0.0), ("spi", 1.0),
                                           ("cpi", 1.0), ("planned_value", 0.0), ("earned_value", 0.0),
                                           ("actual_cost", 0.0), ("budget_variance", 0.0), ("cost_estimate", 0.0),
                                           ("trigger", ""))},
            "tasks_by_state": states, "tasks_total": sum(states.values())}


def _mitigation(m: dict) -> dict:
    detail = json.loads(m["detail"])
    return {"risk_id": m["target"], "action": detail.get("action"), "note": detail.get("note"),
            "by": m["principal"], "at_ms": m["at_ms"]}
