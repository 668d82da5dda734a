"""Avro records (dicts) <-> domain objects. The only place that knows both shapes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from processors.model import (ApprovalState, Constraints, Cost, Estimate, Goal, LearnedEstimate, MemoryUse, Milestone, Phase, Plan,
                              PlanningError, Priority, Risk, RiskCategory, ScheduledTask, Severity, Task,
                              TaskSpec)
from processors.ids import event_id
from processors import lifecycle as L
from topics import registry as T
from topics.serde import serde

HOUR_MS = 3_600_000


def goal_from_record(r: dict[str, Any]) -> Goal:
    """A decoded goals.created value as a Goal; empty required fields raise PlanningError."""
    for name in ("goal_id", "title"):
        if not str(r.get(name) or "").strip():
            raise PlanningError("missing_field", f"goal field {name!r} is empty")
    c = r.get("constraints") or {}
    deadline_ms = c.get("deadline_ms")
    # a deadline already past is planned and flagged (lifecycle.deadline_passed), not refused
    deadline_hours = None if deadline_ms is None else (deadline_ms - r["created_at_ms"]) / HOUR_MS
    if c.get("budget") is not None and c["budget"] < 0:
        raise PlanningError("invalid_constraint", "budget is negative")
    if c.get("max_parallelism") is not None and c["max_parallelism"] < 1:
        raise PlanningError("invalid_constraint", "max_parallelism must be >= 1")
    return Goal(
        goal_id=r["goal_id"], title=r["title"], created_at_ms=r["created_at_ms"],
        description=r.get("description", ""), domain=r.get("domain") or "software",
        priority=Priority(r.get("priority", "MEDIUM")), objectives=tuple(r.get("objectives", ())),
        success_criteria=tuple(r.get("success_criteria", ())),
        constraints=Constraints(deadline_hours=deadline_hours, budget=c.get("budget"),
                                max_parallelism=c.get("max_parallelism"),
                                capacities=dict(c.get("capacities") or {}),
                                required_capabilities=tuple(c.get("required_capabilities") or ())),
        strategy=r.get("strategy"),
        tasks=tuple(TaskSpec(task_id=t["task_id"], name=t["name"], duration_hours=t["duration_hours"],
                             depends_on=tuple(t.get("depends_on", ())), resources=dict(t.get("resources") or {}),
                             capabilities=tuple(t.get("capabilities", ()))) for t in r.get("tasks", ())),
        submitted_by=r.get("submitted_by", ""),
    )


def goal_record(g: Goal) -> dict[str, Any]:
    """The goals.created value of a Goal (the refiner gets the goal this way)."""
    c = g.constraints
    deadline_ms = None if c.deadline_hours is None else g.created_at_ms + round(c.deadline_hours * HOUR_MS)
    return {
        "goal_id": g.goal_id, "title": g.title, "description": g.description, "domain": g.domain,
        "priority": g.priority.value, "objectives": list(g.objectives), "success_criteria": list(g.success_criteria),
        "constraints": {"deadline_ms": deadline_ms, "budget": c.budget, "max_parallelism": c.max_parallelism,
                        "capacities": dict(c.capacities), "required_capabilities": list(c.required_capabilities)},
        "strategy": g.strategy,
        "tasks": [{"task_id": t.task_id, "name": t.name, "duration_hours": t.duration_hours,
                   "depends_on": list(t.depends_on), "resources": dict(t.resources),
                   "capabilities": list(t.capabilities)} for t in g.tasks],
        "submitted_by": g.submitted_by, "created_at_ms": g.created_at_ms,
    }


def approval_from_record(r: dict[str, Any]) -> L.Approval:
    return L.Approval(plan_id=r["plan_id"], version=r["version"], decision=r["decision"], by=r.get("by", ""),
                      reason=r.get("reason", ""), decided_at_ms=r["decided_at_ms"])


def feedback_from_record(r: dict[str, Any]) -> L.Feedback:
    return L.Feedback(plan_id=r["plan_id"], task_id=r["task_id"], status=r["status"],
                      reported_at_ms=r["reported_at_ms"], attempt=r.get("attempt"),
                      progress_pct=r.get("progress_pct", 0.0), actual_hours=r.get("actual_hours"),
                      message=r.get("message", ""), feedback_id=r.get("event_id", ""),
                      produced=None if r.get("produced") is None else tuple(r["produced"]["files"]),
                      exit_status=None if r.get("produced") is None else r["produced"].get("exit_status"))


def decision_from_record(r: dict[str, Any]) -> L.Decision:
    """A resources.allocations / chimera.allocations.decisions value."""
    return L.Decision(plan_id=r["plan_id"], task_id=r["task_id"], attempt=r["attempt"], resource_id=r["resource_id"],
                      decision=r["decision"], reason=r.get("reason", ""), waiting=r.get("waiting", False),
                      cost_estimate=r.get("cost_estimate", 0.0))


def control_from_record(r: dict[str, Any]) -> L.Control:
    """A control.commands value for one plan (plan_id null means every plan: the wiring's business)."""
    return L.Control(command=r["command"], plan_id=r.get("plan_id") or T.ALL_PLANS, reason=r.get("reason", ""),
                     by=r.get("issued_by", ""), at_ms=r["issued_at_ms"])


def control_record(command: str, plan_id: str | None, *, reason: str = "", by: str = "", at_ms: int) -> Out:
    """A control.commands record (the CLI and tests send these); plan_id None: every plan."""
    key = plan_id or T.ALL_PLANS
    return Out(T.CONTROL_COMMANDS.name, key, {
        "command_id": event_id("control", command, key, at_ms), "command": command, "plan_id": plan_id,
        "reason": reason, "issued_by": by, "issued_at_ms": at_ms})


def resource_from_record(r: dict[str, Any]):
    """A resources.availability value as an allocation.Resource (capacity = capacities;
    free: reported, else all of it; healthy unless unavailable or UNHEALTHY)."""
    from processors.allocation import Resource
    caps = {k: float(v) for k, v in r["capacities"].items()}
    return Resource(resource_id=r["resource_id"], kind=r.get("kind", ""), capabilities=frozenset(r.get("capabilities", ())),
                    capacity=caps, free=dict(r.get("free") or caps), cost_per_hour=r.get("hourly_rate", 0.0),
                    healthy=r.get("available", True) and r.get("health", "HEALTHY") != "UNHEALTHY",
                    heartbeat_ms=r.get("heartbeat_ms") or r["updated_at_ms"])


def request_record(req) -> Out:
    """An allocation request to the ledger that owns req.resource_id."""
    return Out(T.ALLOCATION_REQUESTS.name, req.resource_id, {
        "event_id": event_id("alloc-request", req.plan_id, req.task_id, req.attempt, req.resource_id),
        "kind": "REQUEST", "resource_id": req.resource_id, "plan_id": req.plan_id, "task_id": req.task_id,
        "attempt": req.attempt, "demand": dict(req.demand), "capabilities": list(req.capabilities),
        "priority": getattr(req.priority, "value", req.priority), "slack_hours": req.slack_hours,
        "hours": req.hours, "outcome": "", "at_ms": req.requested_at_ms})


def release_record(e: L.AllocationReleased) -> Out:
    return Out(T.ALLOCATION_REQUESTS.name, e.resource_id, {
        "event_id": event_id("alloc-release", e.plan_id, e.task_id, e.attempt, e.resource_id),
        "kind": "RELEASE", "resource_id": e.resource_id, "plan_id": e.plan_id, "task_id": e.task_id,
        "attempt": e.attempt, "demand": {}, "capabilities": [], "priority": "MEDIUM", "slack_hours": 0.0,
        "hours": 0.0, "outcome": e.outcome, "at_ms": e.at_ms})


def request_from_record(r: dict[str, Any]):
    from processors.allocation import AllocationRequest
    return AllocationRequest(plan_id=r["plan_id"], task_id=r["task_id"], attempt=r["attempt"],
                             resource_id=r["resource_id"], demand=dict(r["demand"]),
                             capabilities=tuple(r["capabilities"]), priority=Priority(r["priority"]),
                             slack_hours=r["slack_hours"], hours=r["hours"], requested_at_ms=r["at_ms"])


def task_record(st: ScheduledTask) -> dict[str, Any]:
    t = st.task
    return {
        "task_id": t.task_id, "name": t.name, "description": t.description, "phase": t.phase,
        "component": t.component, "depends_on": list(t.depends_on),
        "estimate": {"optimistic": t.estimate.optimistic, "most_likely": t.estimate.most_likely,
                     "pessimistic": t.estimate.pessimistic},
        "resources": dict(t.resources), "capabilities": list(t.capabilities),
        "success_criteria": list(t.success_criteria), "validation": list(t.validation),
        "risk_mitigation": t.risk_mitigation, "start_hours": st.start_hours, "finish_hours": st.finish_hours,
        "earliest_start_hours": st.earliest_start_hours, "latest_start_hours": st.latest_start_hours,
        "slack_hours": st.slack_hours, "critical": st.critical,
    }


def task_from_record(r: dict[str, Any]) -> ScheduledTask:
    e = r["estimate"]
    task = Task(task_id=r["task_id"], name=r["name"], description=r.get("description", ""),
                phase=r.get("phase", ""), component=r.get("component", ""), depends_on=tuple(r["depends_on"]),
                estimate=Estimate(e["optimistic"], e["most_likely"], e["pessimistic"]),
                resources=dict(r["resources"]), capabilities=tuple(r["capabilities"]),
                success_criteria=tuple(r.get("success_criteria", ())), validation=tuple(r.get("validation", ())),
                risk_mitigation=r.get("risk_mitigation", False))
    return ScheduledTask(task=task, start_hours=r["start_hours"], finish_hours=r["finish_hours"],
                         earliest_start_hours=r["earliest_start_hours"], latest_start_hours=r["latest_start_hours"],
                         slack_hours=r["slack_hours"], critical=r["critical"])


def risk_record(k: Risk) -> dict[str, Any]:
    return {"risk_id": k.risk_id, "category": k.category.value, "title": k.title, "description": k.description,
            "probability": k.probability, "impact": k.impact, "score": round(k.score, 6),
            "severity": k.severity.value, "mitigations": list(k.mitigations), "task_ids": list(k.task_ids)}


def risk_from_record(r: dict[str, Any]) -> Risk:
    return Risk(risk_id=r["risk_id"], category=RiskCategory(r["category"]), title=r["title"],
                description=r.get("description", ""), probability=r["probability"], impact=r["impact"],
                severity=Severity(r["severity"]), mitigations=tuple(r.get("mitigations", ())),
                task_ids=tuple(r.get("task_ids", ())))


def plan_record(p: Plan) -> dict[str, Any]:
    return {
        "event_id": event_id("plan", p.plan_id, p.version),
        "plan_id": p.plan_id, "goal_id": p.goal_id, "version": p.version, "strategy": p.strategy,
        "approval": p.approval.value, "schedule_method": p.schedule_method, "reason": p.reason,
        "makespan_hours": p.makespan_hours, "lower_bound_hours": p.lower_bound_hours,
        "critical_path": list(p.critical_path), "tasks": [task_record(st) for st in p.tasks],
        "phases": [{"name": ph.name, "start_hours": ph.start_hours, "finish_hours": ph.finish_hours,
                    "task_ids": list(ph.task_ids)} for ph in p.phases],
        "milestones": [{"name": m.name, "at_hours": m.at_hours, "task_ids": list(m.task_ids)} for m in p.milestones],
        "risks": [risk_record(k) for k in p.risks],
        "cost": {"total": p.cost.total, "currency": p.cost.currency, "by_resource": dict(p.cost.by_resource)},
        "violations": list(p.violations), "created_at_ms": p.created_at_ms,
        "memory": None if p.memory is None else dataclasses.asdict(p.memory),
        "estimates_source": p.estimates_source,
    }


def plan_from_record(r: dict[str, Any]) -> Plan:
    return Plan(
        plan_id=r["plan_id"], goal_id=r["goal_id"], version=r["version"], strategy=r["strategy"],
        tasks=tuple(task_from_record(t) for t in r["tasks"]), critical_path=tuple(r["critical_path"]),
        makespan_hours=r["makespan_hours"],
        phases=tuple(Phase(ph["name"], ph["start_hours"], ph["finish_hours"], tuple(ph["task_ids"]))
                     for ph in r.get("phases", ())),
        milestones=tuple(Milestone(m["name"], m["at_hours"], tuple(m["task_ids"])) for m in r.get("milestones", ())),
        risks=tuple(risk_from_record(k) for k in r.get("risks", ())),
        cost=Cost(r["cost"]["total"], r["cost"].get("currency", "USD"), dict(r["cost"].get("by_resource", {}))),
        approval=ApprovalState(r["approval"]), schedule_method=r["schedule_method"],
        lower_bound_hours=r.get("lower_bound_hours", 0.0), reason=r.get("reason", ""),
        violations=tuple(r.get("violations", ())), created_at_ms=r["created_at_ms"],
        memory=None if r.get("memory") is None else MemoryUse(**r["memory"]),
        estimates_source=r.get("estimates_source", "heuristic"))


def update_record(p: Plan, previous: Plan, figures: L.Figures = L.Figures(), status: str = "ACTIVE",
                  trigger: str = "") -> dict:
    f = figures
    return {"event_id": event_id("plan-update", p.plan_id, p.version), "plan": plan_record(p),
            "previous_version": previous.version, "previous_makespan_hours": previous.makespan_hours,
            "progress_pct": f.progress_pct, "variance_hours": f.variance_hours, "status": status, "trigger": trigger,
            "spi": f.spi, "cpi": f.cpi, "planned_value": f.pv, "earned_value": f.ev, "actual_cost": f.ac,
            "budget_variance": f.budget_variance, "cost_estimate": f.cost_estimate}


def assignment_record(p: Plan, st: ScheduledTask, attempt: int = 1, resource_id: str | None = None,
                      assigned_at_ms: int | None = None, deadline_ms: int | None = None) -> dict[str, Any]:
    at = p.created_at_ms + int(st.start_hours * HOUR_MS) if assigned_at_ms is None else assigned_at_ms
    return {"event_id": event_id("assign", p.plan_id, st.task.task_id, attempt), "plan_id": p.plan_id,
            "goal_id": p.goal_id, "plan_version": p.version, "task": task_record(st), "assigned_to": resource_id,
            "assigned_at_ms": at, "attempt": attempt, "deadline_ms": deadline_ms,
            "expects": expects_record(st)}


def expects_record(st: ScheduledTask) -> dict[str, Any]:
    """What the task must produce (processors.consistency): the executor reports what it did."""
    from processors import consistency
    e = consistency.expectation(consistency.task_fields(st.task))
    return {"files": list(e.files), "exit_status": e.exit_status}


def alert_record(p: Plan, k: Risk) -> dict[str, Any]:
    return {"event_id": event_id("alert", p.plan_id, p.version, k.risk_id), "plan_id": p.plan_id,
            "goal_id": p.goal_id, "plan_version": p.version, "risk": risk_record(k),
            "raised_at_ms": p.created_at_ms}


@dataclass(frozen=True)
class Out:
    """One record to publish: topic, key and the (not yet encoded) value."""

    topic: str
    key: str
    value: dict[str, Any]
    plan: Plan | None = dataclasses.field(default=None, compare=False)   # its plan, encoded once (plan_bytes)


def encode_value(o: Out) -> bytes:
    """An output's Avro value; a plan in it is the body encoded once per version (plan_bytes)."""
    from streams import plan_bytes
    if o.plan is not None:
        if o.topic == T.PLANS_CREATED.name:
            return serde(o.topic).header + plan_bytes.body(o.plan, o.value)
        if o.topic == T.PLANS_UPDATED.name:
            return plan_bytes.updated(o.value, o.plan)
    return serde(o.topic).encode(o.value)


_RECORDS: dict[type, Callable[[Any], Out]] = {
    L.PlanCreated: lambda e: Out(T.PLANS_CREATED.name, e.plan.plan_id, plan_record(e.plan), e.plan),
    L.PlanUpdated: lambda e: Out(T.PLANS_UPDATED.name, e.plan.plan_id,
                                 update_record(e.plan, e.previous, e.figures, e.status, e.trigger), e.plan),
    L.TaskAssigned: lambda e: Out(T.TASKS_ASSIGNED.name, e.plan.plan_id, assignment_record(
        e.plan, e.task, e.attempt, e.resource_id, e.assigned_at_ms, e.deadline_ms)),
    L.AllocationRequested: lambda e: request_record(e.request),
    L.AllocationReleased: release_record,
    L.RiskAlerted: lambda e: Out(T.RISKS_ALERTS.name, e.plan.plan_id, alert_record(e.plan, e.risk)),
    L.RefineRequested: lambda e: Out(T.PLANS_REFINE.name, e.plan.plan_id, {
        "plan_id": e.plan.plan_id, "base_version": e.plan.version, "goal": goal_record(e.goal),
        "known_capacities": dict(e.capacities), "estimates": estimates_records(e.goal.estimates), "kind": e.kind}),
}


def estimates_records(estimates: Iterable[LearnedEstimate]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(e) for e in estimates]


def estimates_from_records(rs: Iterable[dict[str, Any]]) -> tuple[LearnedEstimate, ...]:
    return tuple(LearnedEstimate(r["task_id"], float(r["low"]), float(r["median"]), float(r["high"]),
                                 float(r["failure_p"])) for r in rs)


def records(events: Iterable[L.Event]) -> list[Out]:
    """The records a handler's domain events publish (events without one, e.g. Ignored, publish nothing)."""
    return [_RECORDS[type(e)](e) for e in events if type(e) in _RECORDS]


def refined_record(plan: Plan, base_version: int, kind: str = "refine", answer: str = "") -> Out:
    return Out(T.PLANS_REFINED.name, plan.plan_id, {"plan_id": plan.plan_id, "base_version": base_version,
                                                    "plan": plan_record(plan), "kind": kind, "answer": answer})


def decision_records(decisions, ledger, resource, at_ms: int) -> list[Out]:
    """A ledger's decisions: each on resources.allocations (keyed by resource id: the history
    of every booking of that resource, in order) and, keyed by plan id, back to the plan."""
    from processors.allocation import Granted, Refused, Released
    capacity = dict(resource.capacity) if resource is not None else {}
    booked = ledger.booked() if ledger is not None else {}
    out: list[Out] = []
    for d in decisions:
        q = d.request
        kind = {Granted: "GRANTED", Refused: "REFUSED", Released: "RELEASED"}[type(d)]
        value = {"event_id": event_id("allocation", kind, q.resource_id, q.plan_id, q.task_id, q.attempt, at_ms),
                 "decision": kind, "resource_id": q.resource_id, "plan_id": q.plan_id, "task_id": q.task_id,
                 "attempt": q.attempt, "reason": getattr(d, "reason", ""), "waiting": getattr(d, "waiting", False),
                 "demand": dict(q.demand), "capacity": capacity, "booked": booked,
                 "cost_estimate": getattr(d, "cost_estimate", 0.0), "decided_at_ms": at_ms}
        out.append(Out(T.RESOURCES_ALLOCATIONS.name, q.resource_id, value))
        if kind != "RELEASED":   # the plan asked for the release (or moved on): nothing to tell it
            out.append(Out(T.ALLOCATION_DECISIONS.name, q.plan_id, value))
    return out
