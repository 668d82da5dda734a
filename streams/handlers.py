"""What the planner agent does with each record, without Kafka: state in, messages out.

Keeping the decisions here (and the I/O in app.py) lets unit tests drive the exact
logic the worker runs. State is one JSON-able dict per plan, kept in a Faust table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from processors import approval, risk
from processors.config import PlanningConfig
from processors.model import ApprovalState, Goal, Plan
from processors.planner import plan_goal, ready_tasks, refine_plan
from streams import codec
from topics import registry as T


@dataclass
class Out:
    topic: str
    key: str
    value: dict[str, Any]


@dataclass
class Step:
    """The result of handling one record."""

    state: dict[str, Any] | None
    out: list[Out] = field(default_factory=list)
    ignored: str = ""              # why nothing happened (duplicate, stale version, ...)


def _emit_plan_events(plan: Plan, state: dict, out: list[Out], config: PlanningConfig) -> None:
    """Alerts for risks not alerted yet; assignments for ready tasks once approved."""
    alerted = set(state.setdefault("alerted", []))
    for k in risk.alerts(plan.risks, config):
        if k.risk_id not in alerted:
            out.append(Out(T.RISKS_ALERTS.name, plan.plan_id, codec.alert_record(plan, k)))
            alerted.add(k.risk_id)
    state["alerted"] = sorted(alerted)
    if plan.approval in (ApprovalState.APPROVED, ApprovalState.AUTO_APPROVED):
        assigned = set(state.setdefault("assigned", []))
        for st in ready_tasks(plan, set(state.get("done", [])), assigned):
            out.append(Out(T.TASKS_ASSIGNED.name, plan.plan_id, codec.assignment_record(plan, st)))
            assigned.add(st.task.task_id)
        state["assigned"] = sorted(assigned)


def _new_version(state: dict, previous: Plan, plan: Plan, out: list[Out], config: PlanningConfig) -> Step:
    state["plan"] = codec.plan_record(plan)
    out.append(Out(T.PLANS_UPDATED.name, plan.plan_id, codec.update_record(plan, previous)))
    _emit_plan_events(plan, state, out, config)
    return Step(state, out)


def on_goal(goal: Goal, goal_record: dict, state: dict | None, capacities: Mapping[str, float],
            config: PlanningConfig) -> Step:
    """First plan of a goal (fast path), and a refinement request. A goal seen before
    (a replay) changes nothing."""
    if state is not None:
        return Step(state, ignored="duplicate goal: plan exists")
    plan, _ = plan_goal(goal, known_capacities=capacities, config=config)
    state = {"goal": goal_record, "plan": codec.plan_record(plan), "assigned": [], "done": [], "alerted": []}
    out = [Out(T.PLANS_CREATED.name, plan.plan_id, state["plan"])]
    _emit_plan_events(plan, state, out, config)
    if config.refine_budget_seconds > 0:
        out.append(Out(T.PLANS_REFINE.name, plan.plan_id, {
            "plan_id": plan.plan_id, "base_version": plan.version, "goal": goal_record,
            "known_capacities": dict(capacities)}))
    return Step(state, out)


def refine(request: dict, config: PlanningConfig) -> Out | None:
    """CP-SAT refinement of a first plan (slow: the refiner runs it off the event loop).
    The first plan is rebuilt from the goal: planning is deterministic, so it is the one published."""
    goal = codec.goal_from_record(request["goal"])
    plan, problem = plan_goal(goal, known_capacities=request["known_capacities"], config=config)
    better = refine_plan(goal, plan, problem, config)
    if better is None:
        return None
    return Out(T.PLANS_REFINED.name, plan.plan_id, {"plan_id": plan.plan_id, "base_version": plan.version,
                                                     "plan": codec.plan_record(better)})


def _current(record: dict, state: dict | None, version: int, what: str) -> Plan | Step:
    """The plan a record is about, or the Step that ignores a record for a missing or newer plan."""
    if state is None:
        return Step(None, ignored=f"no plan {record['plan_id']}")
    current = codec.plan_from_record(state["plan"])
    if version != current.version:
        return Step(state, ignored=f"{what} for version {version}, current is {current.version}")
    return current


def on_refined(record: dict, state: dict | None, config: PlanningConfig) -> Step:
    """Publish a refined schedule as a new version, if the plan has not changed meanwhile."""
    current = _current(record, state, record["base_version"], "refinement")
    if isinstance(current, Step):
        return current
    better = codec.plan_from_record(record["plan"])
    if current.approval is ApprovalState.APPROVED and better.approval is ApprovalState.PENDING:
        better = dataclasses.replace(better, approval=ApprovalState.APPROVED)  # a person approved the work
    return _new_version(state, current, better, [], config)


def on_approval(record: dict, state: dict | None, config: PlanningConfig) -> Step:
    current = _current(record, state, record["version"], "approval")
    if isinstance(current, Step):
        return current
    if current.approval is not ApprovalState.PENDING:
        return Step(state, ignored=f"plan is already {current.approval.value}")
    who = record.get("by") or "unknown"
    if record["decision"] == "APPROVE":
        plan = approval.approve(current, who)
    else:
        plan = approval.reject(current, who, record.get("reason", ""))
    return _new_version(state, current, plan, [], config)


def on_feedback(record: dict, state: dict | None, config: PlanningConfig) -> Step:
    """Completed tasks release their successors."""
    if state is None:
        return Step(None, ignored=f"no plan {record['plan_id']}")
    plan = codec.plan_from_record(state["plan"])
    try:
        plan.task(record["task_id"])
    except KeyError:
        return Step(state, ignored=f"unknown task {record['task_id']}")
    if record["status"] != "COMPLETED" or record["task_id"] in state["done"]:
        return Step(state, ignored="no change")
    state["done"] = sorted(set(state["done"]) | {record["task_id"]})
    out: list[Out] = []
    _emit_plan_events(plan, state, out, config)
    return Step(state, out)
