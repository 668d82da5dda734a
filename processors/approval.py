"""Approval workflow and plan versioning.

Every change to a plan is a new version (`new_version`: version + 1, reason recorded,
the original left untouched). Low-risk valid plans are auto-approved when configured;
plans with violations stay PENDING with their violations; only a person rejects.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

from .config import PlanningConfig
from .model import ApprovalState, Plan, PlanningError, Risk
from .risk import is_low_risk

_FIXED = frozenset({"plan_id", "goal_id", "version", "reason"})
_STRUCTURAL = frozenset({"tasks", "critical_path", "strategy", "makespan_hours"})
_HUMAN = (ApprovalState.APPROVED, ApprovalState.REJECTED)


def decide(plan: Plan, config: PlanningConfig) -> ApprovalState:
    """The approval state a plan should have: a person's decision stands; otherwise
    AUTO_APPROVED for a valid low-risk plan when auto_approve_low_risk_plans, else PENDING."""
    return decide_state(plan.approval, plan.violations, plan.risks, config)


def decide_state(current: ApprovalState, violations: tuple[str, ...], risks: tuple[Risk, ...],
                 config: PlanningConfig) -> ApprovalState:
    """`decide` on a plan's parts (for callers that assemble the plan afterwards)."""
    if current in _HUMAN:
        return current
    if violations:
        return ApprovalState.PENDING
    if config.auto_approve_low_risk_plans and is_low_risk(risks, config):
        return ApprovalState.AUTO_APPROVED
    return ApprovalState.PENDING


def new_version(plan: Plan, *, reason: str, **changes: Any) -> Plan:
    """The next version of a plan with `changes` applied (dataclasses.replace).

    A change to the plan's structure (tasks, critical path, strategy, makespan) clears a
    previous approval back to PENDING unless `approval` is given explicitly: a changed
    plan needs a fresh decision (call `decide`).
    """
    if not reason:
        raise ValueError("a new plan version needs a reason")
    fixed = _FIXED & changes.keys()
    if fixed:
        raise ValueError(f"cannot change {', '.join(sorted(fixed))} in a new version")
    unknown = set(changes) - {f.name for f in dataclasses.fields(Plan)}
    if unknown:
        raise ValueError(f"unknown plan field(s): {', '.join(sorted(unknown))}")
    if "approval" not in changes and _STRUCTURAL & changes.keys():
        changes["approval"] = ApprovalState.PENDING
    return dataclasses.replace(plan, version=plan.version + 1, reason=reason, **changes)


def apply_decision(plan: Plan, config: PlanningConfig) -> Plan:
    """`plan` with `decide`'s state; a new version only if the state changes."""
    state = decide(plan, config)
    if state == plan.approval:
        return plan
    why = "auto-approved: low risk" if state == ApprovalState.AUTO_APPROVED else f"approval {state.value.lower()}"
    return new_version(plan, reason=why, approval=state)


def keep_decision(current: Plan, successor: Plan) -> Plan:
    """A refinement keeps a person's approval: the work approved is the same, only
    scheduled tighter, so it needs no second decision."""
    if current.approval is ApprovalState.APPROVED and successor.approval is ApprovalState.PENDING:
        return dataclasses.replace(successor, approval=ApprovalState.APPROVED)
    return successor


def approve(plan: Plan, by: str) -> Plan:
    """A person approves: new version, APPROVED, reason "approved by <by>"."""
    if not by:
        raise ValueError("approve needs the approver's name")
    if plan.approval == ApprovalState.APPROVED:
        return plan
    if plan.approval == ApprovalState.REJECTED:
        raise PlanningError("invalid_transition", f"plan {plan.plan_id} v{plan.version} was rejected; "
                                                  "re-plan to create a new version first")
    return new_version(plan, reason=f"approved by {by}", approval=ApprovalState.APPROVED)


def reject(plan: Plan, by: str, reason: str) -> Plan:
    """A person rejects: new version, REJECTED, reason "rejected by <by>: <reason>"."""
    if not by:
        raise ValueError("reject needs the person's name")
    if plan.approval == ApprovalState.REJECTED:
        return plan
    return new_version(plan, reason=f"rejected by {by}: {reason}" if reason else f"rejected by {by}",
                       approval=ApprovalState.REJECTED)


@dataclass(frozen=True)
class PlanHistory:
    """All versions of one plan, oldest first (immutable; `append` returns a new history)."""

    versions: tuple[Plan, ...] = ()

    def append(self, plan: Plan) -> "PlanHistory":
        if self.versions:
            last = self.versions[-1]
            if plan.plan_id != last.plan_id:
                raise ValueError(f"plan {plan.plan_id} does not belong to history of {last.plan_id}")
            if plan.version != last.version + 1:
                raise ValueError(f"expected version {last.version + 1}, got {plan.version}")
        return PlanHistory(self.versions + (plan,))

    @property
    def latest(self) -> Plan:
        if not self.versions:
            raise LookupError("empty plan history")
        return self.versions[-1]

    def get(self, version: int) -> Plan:
        for p in self.versions:
            if p.version == version:
                return p
        raise KeyError(version)

    def reasons(self) -> tuple[tuple[int, str], ...]:
        return tuple((p.version, p.reason) for p in self.versions)

    def __iter__(self) -> Iterator[Plan]:
        return iter(self.versions)

    def __len__(self) -> int:
        return len(self.versions)
