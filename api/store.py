"""The API's materialised view: what the topics say about each plan, folded in memory.

`Store.apply` takes one decoded record of a followed topic; it does no I/O, so the folding is
tested without a broker (api/view.py feeds it from Kafka). Only the latest version of a plan,
the latest assignment and feedback of each task and the plan's alerts, approvals and
mitigations are kept.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from processors.ids import plan_id as derive_plan_id
from topics import registry as T

FOLLOWED = (T.GOALS_CREATED.name, T.PLANS_CREATED.name, T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name,
            T.EXECUTION_FEEDBACK.name, T.RISKS_ALERTS.name, T.PLANS_APPROVALS.name, T.CONTROL_COMMANDS.name,
            T.API_AUDIT.name)


@dataclass
class PlanView:
    plan_id: str
    tenant: str | None = None
    goal: dict | None = None
    plan: dict | None = None               # the latest version's Plan record
    update: dict | None = None             # the latest plans.updated record, without its plan
    assignments: dict[str, dict] = field(default_factory=dict)   # task id -> latest attempt
    feedback: dict[str, dict] = field(default_factory=dict)      # task id -> latest report
    alerts: list[dict] = field(default_factory=list)
    approvals: list[dict] = field(default_factory=list)
    commands: list[dict] = field(default_factory=list)
    mitigations: list[dict] = field(default_factory=list)
    trace_ids: set[str] = field(default_factory=set)
    traceparent: str | None = None         # the goal's: writes about the plan continue its trace
    submitted_at_ms: int = 0

    @property
    def status(self) -> str:
        if self.update is not None:
            return self.update["status"]
        if self.plan is not None:
            return "ACTIVE"
        return "PLANNING"

    @property
    def approval(self) -> str | None:
        return None if self.plan is None else self.plan["approval"]

    @property
    def version(self) -> int | None:
        return None if self.plan is None else self.plan["version"]

    def task_state(self, task_id: str) -> dict:
        a, fb = self.assignments.get(task_id), self.feedback.get(task_id)
        current = fb if fb and (not a or fb.get("attempt") in (None, a["attempt"])) else None
        state = ("STARTED" if current["status"] == "PROGRESS" else current["status"]) if current else (
            "ASSIGNED" if a else "WAITING")
        pct = 100.0 if state == "COMPLETED" else float((current or {}).get("progress_pct") or 0.0)
        return {"task_id": task_id, "state": state, "progress_pct": pct,
                "attempt": a["attempt"] if a else None, "assigned_to": (a or {}).get("assigned_to"),
                "actual_hours": (current or {}).get("actual_hours"), "message": (current or {}).get("message", "")}


def _trace_id(headers: dict[str, str]) -> str | None:
    tp = headers.get("traceparent", "")
    parts = tp.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class Store:
    """Plans by id; every method is safe from the follower thread and request threads."""

    def __init__(self) -> None:
        self.plans: dict[str, PlanView] = {}
        self.audit_count = 0
        self.lock = threading.RLock()

    def _plan(self, pid: str) -> PlanView:
        view = self.plans.get(pid)
        if view is None:
            view = self.plans[pid] = PlanView(pid)
        return view

    def note_goal(self, goal: dict, traceparent: str | None = None) -> str:
        """A goal the API itself just produced: visible to its tenant at once (read your writes)."""
        with self.lock:
            view = self._plan(derive_plan_id(goal["goal_id"]))
            if view.goal is None:
                view.goal, view.tenant, view.submitted_at_ms = goal, goal.get("tenant") or "", goal["created_at_ms"]
                view.traceparent = traceparent
            return view.plan_id

    def apply(self, topic: str, key: str | None, value: dict | None, headers: dict[str, str] | None = None) -> None:
        if value is None:
            return
        headers = headers or {}
        with self.lock:
            if topic == T.GOALS_CREATED.name:
                view = self._plan(derive_plan_id(value["goal_id"]))
                if view.goal is None or view.goal.get("goal_id") == value["goal_id"]:
                    view.goal, view.tenant = value, value.get("tenant") or ""
                    view.submitted_at_ms = value["created_at_ms"]
                    view.traceparent = view.traceparent or headers.get("traceparent")
            elif topic == T.API_AUDIT.name:
                self.audit_count += 1
                if value["action"] == "mitigate" and value["status"] < 300:
                    try:
                        pid = json.loads(value["detail"]).get("plan_id", "")
                    except (ValueError, AttributeError):
                        return
                    view = self.plans.get(pid)
                    if view is not None and view.tenant == value["tenant"] and \
                            all(m["event_id"] != value["event_id"] for m in view.mitigations):
                        view.mitigations.append(value)
                return
            elif topic == T.CONTROL_COMMANDS.name:
                if value.get("plan_id"):
                    self._plan(value["plan_id"]).commands.append(value)
                return
            else:
                pid = value.get("plan_id") or (value.get("plan") or {}).get("plan_id") or key
                if not pid:
                    return
                view = self._plan(pid)
                if topic == T.PLANS_CREATED.name:
                    if view.plan is None or value["version"] >= view.plan["version"]:
                        view.plan = value
                elif topic == T.PLANS_UPDATED.name:
                    if view.plan is None or value["plan"]["version"] >= view.plan["version"]:
                        view.plan = value["plan"]
                        view.update = {k: v for k, v in value.items() if k != "plan"}
                elif topic == T.TASKS_ASSIGNED.name:
                    tid = value["task"]["task_id"]
                    old = view.assignments.get(tid)
                    if old is None or value["attempt"] >= old["attempt"]:
                        view.assignments[tid] = value
                elif topic == T.EXECUTION_FEEDBACK.name:
                    view.feedback[value["task_id"]] = value
                elif topic == T.RISKS_ALERTS.name:
                    if all(a["event_id"] != value["event_id"] for a in view.alerts):
                        view.alerts.append(value)
                elif topic == T.PLANS_APPROVALS.name:
                    view.approvals.append(value)
            tid = _trace_id(headers)
            if tid:
                view.trace_ids.add(tid)

    def get(self, pid: str) -> PlanView | None:
        with self.lock:
            return self.plans.get(pid)

    def of_tenant(self, tenant: str) -> list[PlanView]:
        with self.lock:
            return sorted((v for v in self.plans.values() if v.tenant == tenant and v.goal is not None),
                          key=lambda v: (v.submitted_at_ms, v.plan_id))


def plan_risks(view: PlanView) -> list[dict]:
    """A plan's risks: those of its latest version, then alerts raised later, once per risk id."""
    seen: dict[str, dict] = {}
    for r in (view.plan or {}).get("risks", []):
        seen.setdefault(r["risk_id"], dict(r, source="plan"))
    for a in view.alerts:
        seen.setdefault(a["risk"]["risk_id"], dict(a["risk"], source="alert", raised_at_ms=a["raised_at_ms"]))
    return list(seen.values())
