"""The plan lifecycle: a plan's state and what each record does to it.

Every handler takes the current `PlanState` (None before the first goal) and one
input, and returns the new state and the domain events it caused; it never sends,
stores or reads anything. The wiring turns events into records and saves the state
together with them. A record that cannot apply raises PlanningError with the reason
its dead letter carries; a harmless repeat returns an `Ignored` event, counted.

Task runs follow ASSIGNED -> STARTED -> COMPLETED | FAILED (STARTED may be skipped;
PROGRESS keeps a task STARTED). Only tasks handed out in the current attempt accept
feedback, so a forged COMPLETED cannot release successors whose predecessors never ran.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Mapping, Union

from . import approval, memory, risk
from .config import PlanningConfig
from .model import ApprovalState, Goal, Plan, PlanningError, Risk, ScheduledTask
from .planner import plan_goal, ready_tasks, refine_plan

HOUR_MS = 3_600_000


class RunStatus(str, Enum):
    ASSIGNED = "ASSIGNED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


_NEXT: dict[RunStatus, frozenset[str]] = {
    RunStatus.ASSIGNED: frozenset({"STARTED", "PROGRESS", "COMPLETED", "FAILED"}),
    RunStatus.STARTED: frozenset({"PROGRESS", "COMPLETED", "FAILED"}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
}


@dataclass(frozen=True)
class TaskRun:
    status: RunStatus
    attempt: int = 1


@dataclass(frozen=True)
class PlanState:
    """What the planner keeps per plan: the current version, the goal's fingerprint (to
    tell a replay from an edited re-send), which tasks ran, which risks were alerted."""

    plan: Plan
    goal_digest: str
    runs: Mapping[str, TaskRun] = field(default_factory=lambda: MappingProxyType({}))
    alerted: frozenset[str] = frozenset()
    finished_at_ms: int | None = None     # set once nothing more can happen; state may then expire

    def with_runs(self, **changes: TaskRun) -> "PlanState":
        return dataclasses.replace(self, runs=MappingProxyType({**self.runs, **changes}))

    @property
    def done(self) -> frozenset[str]:
        return frozenset(t for t, r in self.runs.items() if r.status is RunStatus.COMPLETED)


@dataclass(frozen=True)
class Approval:
    plan_id: str
    version: int
    decision: str            # APPROVE | REJECT
    by: str = ""
    reason: str = ""
    decided_at_ms: int = 0


@dataclass(frozen=True)
class Feedback:
    plan_id: str
    task_id: str
    status: str              # STARTED | PROGRESS | COMPLETED | FAILED
    reported_at_ms: int
    attempt: int | None = None
    progress_pct: float = 0.0
    actual_hours: float | None = None
    message: str = ""


# Domain events -----------------------------------------------------------------------

@dataclass(frozen=True)
class PlanCreated:
    plan: Plan


@dataclass(frozen=True)
class PlanUpdated:
    plan: Plan
    previous: Plan


@dataclass(frozen=True)
class TaskAssigned:
    plan: Plan
    task: ScheduledTask
    attempt: int


@dataclass(frozen=True)
class RiskAlerted:
    plan: Plan
    risk: Risk


@dataclass(frozen=True)
class RefineRequested:
    plan: Plan
    goal: Goal
    capacities: Mapping[str, float]


@dataclass(frozen=True)
class TaskReported:
    """Feedback that changed a task's run (no record: metrics and, later, progress)."""

    plan_id: str
    task_id: str
    status: RunStatus


@dataclass(frozen=True)
class Ignored:
    """A harmless repeat (a replayed goal or feedback): counted by reason, no output."""

    reason: str
    detail: str = ""


Event = Union[PlanCreated, PlanUpdated, TaskAssigned, RiskAlerted, RefineRequested, TaskReported, Ignored]
Result = tuple["PlanState | None", tuple[Event, ...]]


def goal_digest(goal: Goal) -> str:
    """A fingerprint of everything the goal says (its fields are plain values)."""
    return hashlib.sha256(repr(goal).encode()).hexdigest()[:32]


def deadline_passed(goal: Goal, received_at_ms: int) -> bool:
    d = goal.constraints.deadline_hours
    return d is not None and goal.created_at_ms + d * HOUR_MS <= received_at_ms


def _flag_past_deadline(plan: Plan) -> Plan:
    """A plan for a goal whose deadline had passed when it arrived: kept, never auto-approved."""
    violations = plan.violations + ("deadline already passed when the goal arrived",)
    state = ApprovalState.PENDING if plan.approval is ApprovalState.AUTO_APPROVED else plan.approval
    return dataclasses.replace(plan, violations=violations, approval=state)


def _emit(state: PlanState, config: PlanningConfig, events: list[Event]) -> PlanState:
    """Alerts for risks not alerted yet; assignments for ready tasks once approved."""
    plan = state.plan
    new_alerts = [k for k in risk.alerts(plan.risks, config) if k.risk_id not in state.alerted]
    events.extend(RiskAlerted(plan, k) for k in new_alerts)
    if new_alerts:
        state = dataclasses.replace(state, alerted=state.alerted | {k.risk_id for k in new_alerts})
    if plan.approval in (ApprovalState.APPROVED, ApprovalState.AUTO_APPROVED):
        ready = ready_tasks(plan, state.done, frozenset(state.runs))
        events.extend(TaskAssigned(plan, st, 1) for st in ready)
        if ready:
            state = state.with_runs(**{st.task.task_id: TaskRun(RunStatus.ASSIGNED) for st in ready})
    return state


def on_goal(state: PlanState | None, goal: Goal, capacities: Mapping[str, float], config: PlanningConfig,
            *, received_at_ms: int, reuse: "memory.Reuse | None" = None) -> Result:
    """The first plan of a goal (fast path) and, when configured, a refinement request.
    A replayed goal changes nothing; an edited re-send of a planned goal is refused.
    `reuse` (processors.memory.reuse) plans the goal from a past episode instead: the plan
    records it (plan.memory), and the refinement request carries the goal actually planned."""
    digest = goal_digest(goal)
    if state is not None:
        if state.goal_digest == digest:
            return state, (Ignored("duplicate_goal", f"goal {goal.goal_id} is already planned"),)
        raise PlanningError("goal_edited", f"goal {goal.goal_id} was re-sent with different content; plan "
                                           f"{state.plan.plan_id} v{state.plan.version} stands: send the change "
                                           "under a new goal_id")
    planned = goal if reuse is None else reuse.goal
    plan, _ = plan_goal(planned, known_capacities=capacities, config=config)
    if reuse is not None:
        plan = dataclasses.replace(plan, strategy=memory.STRATEGY, memory=reuse.use)
    if deadline_passed(goal, received_at_ms):
        plan = _flag_past_deadline(plan)
    events: list[Event] = [PlanCreated(plan)]
    new = _emit(PlanState(plan=plan, goal_digest=digest), config, events)
    if config.refine_budget_seconds > 0:
        events.append(RefineRequested(plan, planned, MappingProxyType(dict(capacities))))
    return new, tuple(events)


def refine(goal: Goal, capacities: Mapping[str, float], config: PlanningConfig) -> Plan | None:
    """A shorter schedule for a goal's first plan, or None (slow: CP-SAT, run off the event
    loop). Planning is deterministic, so the first plan rebuilt here is the published one."""
    plan, problem = plan_goal(goal, known_capacities=capacities, config=config)
    return refine_plan(goal, plan, problem, config)


def _require(state: PlanState | None, plan_id: str) -> PlanState:
    if state is None:
        raise PlanningError("unknown_plan", f"no plan {plan_id} on this partition")
    return state


def _require_version(state: PlanState, version: int, what: str) -> None:
    if version != state.plan.version:
        raise PlanningError("stale_version", f"{what} for {state.plan.plan_id} v{version}, "
                                             f"the current version is {state.plan.version}")


def _new_version(state: PlanState, plan: Plan, config: PlanningConfig, *, at_ms: int) -> Result:
    events: list[Event] = [PlanUpdated(plan, state.plan)]
    finished = at_ms if plan.approval is ApprovalState.REJECTED else state.finished_at_ms
    new = _emit(dataclasses.replace(state, plan=plan, finished_at_ms=finished), config, events)
    return new, tuple(events)


def on_refined(state: PlanState | None, plan_id: str, base_version: int, refined: Plan,
               config: PlanningConfig) -> Result:
    """Publish a refined schedule as a new version if the plan has not changed meanwhile."""
    state = _require(state, plan_id)
    if refined.plan_id != plan_id:
        raise PlanningError("wrong_plan", f"refinement for {plan_id} carries plan {refined.plan_id}")
    _require_version(state, base_version, "refinement")
    if refined.version != base_version + 1:
        raise PlanningError("stale_version", f"refinement of v{base_version} carries v{refined.version}")
    if state.plan.approval is ApprovalState.REJECTED:
        return state, (Ignored("plan_rejected", f"{plan_id} was rejected; refinement dropped"),)
    if state.plan.memory is not None:  # the refiner re-planned the remembered tasks: say so again
        refined = dataclasses.replace(refined, strategy=state.plan.strategy, memory=state.plan.memory)
    return _new_version(state, approval.keep_decision(state.plan, refined), config, at_ms=0)


def on_approval(state: PlanState | None, decision: Approval, config: PlanningConfig) -> Result:
    """A person's decision on the current version of a PENDING plan."""
    state = _require(state, decision.plan_id)
    _require_version(state, decision.version, "approval")
    if state.plan.approval is not ApprovalState.PENDING:
        raise PlanningError("not_pending", f"{decision.plan_id} v{decision.version} is already "
                                           f"{state.plan.approval.value}")
    who = decision.by or "unknown"
    if decision.decision == "APPROVE":
        plan = approval.approve(state.plan, who)
    else:
        plan = approval.reject(state.plan, who, decision.reason)
    return _new_version(state, plan, config, at_ms=decision.decided_at_ms)


def on_feedback(state: PlanState | None, fb: Feedback, config: PlanningConfig) -> Result:
    """Progress of a task handed out in the current attempt; COMPLETED releases successors."""
    state = _require(state, fb.plan_id)
    try:
        state.plan.task(fb.task_id)
    except KeyError:
        raise PlanningError("unknown_task", f"{fb.plan_id} v{state.plan.version} has no task {fb.task_id!r}") from None
    run = state.runs.get(fb.task_id)
    if run is None:
        raise PlanningError("not_assigned", f"task {fb.task_id!r} of {fb.plan_id} was never assigned")
    if fb.attempt is not None and fb.attempt != run.attempt:
        raise PlanningError("stale_attempt", f"feedback for attempt {fb.attempt} of {fb.task_id!r}, "
                                             f"the current attempt is {run.attempt}")
    if fb.status == run.status.value:
        return state, (Ignored("duplicate_feedback", f"{fb.task_id!r} is already {run.status.value}"),)
    if fb.status not in _NEXT[run.status]:
        raise PlanningError("illegal_transition", f"task {fb.task_id!r}: {run.status.value} -> {fb.status}")
    status = RunStatus.STARTED if fb.status == "PROGRESS" else RunStatus(fb.status)
    events: list[Event] = []
    if status is not run.status:
        events.append(TaskReported(fb.plan_id, fb.task_id, status))
    new = state.with_runs(**{fb.task_id: dataclasses.replace(run, status=status)})
    if status is RunStatus.COMPLETED:
        new = _emit(new, config, events)
        if len(new.done) == len(new.plan.tasks):
            new = dataclasses.replace(new, finished_at_ms=fb.reported_at_ms)
    return new, tuple(events)


def expiry_due(finished_at_ms: int | None, now_ms: int, ttl_hours: float) -> bool:
    """A finished plan's state may go once nothing happened to it for `ttl_hours`."""
    return finished_at_ms is not None and finished_at_ms + ttl_hours * HOUR_MS <= now_ms


def on_expire(state: PlanState | None, plan_id: str, finished_at_ms: int) -> Result:
    """Forget a finished plan (None state), unless it changed since the expiry was decided."""
    if state is None:
        return None, (Ignored("already_expired", plan_id),)
    if state.finished_at_ms != finished_at_ms:
        return state, (Ignored("not_expired", f"{plan_id} changed since it finished"),)
    return None, ()
