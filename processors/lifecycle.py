"""The plan lifecycle: a plan's state and what each record does to it.

Every handler takes the current `PlanState` (None before the first goal) and one
input, and returns the new state and the domain events it caused; it never sends,
stores or reads anything. The wiring turns events into records and saves the state
together with them. A record that cannot apply raises PlanningError with the reason
its dead letter carries; a harmless repeat returns an `Ignored` event, counted.

Task runs follow ASSIGNED -> STARTED -> COMPLETED | FAILED (STARTED may be skipped;
PROGRESS keeps a task STARTED). Only tasks handed out in the current attempt accept
feedback, so a forged COMPLETED cannot release successors whose predecessors never ran.

Live plans (issue 7). With concrete resources known (`Live.resources`), a ready task is not
handed out at once: the plan *proposes* a resource (allocation.choose_resource) and emits an
`AllocationRequested` keyed by that resource (run WAITING); the resource's ledger decides,
and only a `Granted` decision (`on_allocation`) dispatches the attempt (ASSIGNED, with a
deadline). Without resources (none announced) tasks are handed out directly, unallocated.
A failed or timed-out attempt is retried with backoff (RETRY until `due_ms`, dispatched by
`on_tick`), a task that fails after its retries, drift beyond the thresholds, lost capacity
and a changed goal replan the remaining work (progress.replan_keeping_done: completed and
running work keeps its times). STOP / RESUME / CANCEL (`on_control`) hold, release or end
a plan; `Live.halted` holds every plan. A plan ends COMPLETED, FAILED or CANCELLED.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Mapping, Union

from . import approval, llm_plan, memory, progress, risk
from .allocation import AllocationRequest, Resource, budget_hold, choose_resource, request_for
from .config import PlanningConfig
from .model import ApprovalState, Goal, LearnedEstimate, Plan, PlanningError, Priority, Risk, RiskCategory, ScheduledTask, Severity
from .planner import plan_goal, ready_tasks, refine_plan
from .retry import GiveUp, attempt_deadline_ms, retry_decision

HOUR_MS = 3_600_000


class RunStatus(str, Enum):
    WAITING = "WAITING"        # allocation requested from `resource_id`'s ledger, not granted yet
    UNPLACED = "UNPLACED"      # ready, but no resource can take it now (tried again when due)
    HELD = "HELD"              # granted, not dispatched: the plan (or everything) is stopped or held
    RETRY = "RETRY"            # an attempt failed or timed out; `attempt` goes out at `due_ms`
    ASSIGNED = "ASSIGNED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"          # failed for good (no attempts left)


_NEXT: dict[RunStatus, frozenset[str]] = {s: frozenset() for s in RunStatus}
_NEXT[RunStatus.ASSIGNED] = frozenset({"STARTED", "PROGRESS", "COMPLETED", "FAILED", "CANCELLED"})
_NEXT[RunStatus.STARTED] = frozenset({"PROGRESS", "COMPLETED", "FAILED", "CANCELLED"})
OUT = frozenset({RunStatus.ASSIGNED, RunStatus.STARTED})                  # dispatched, running
HOLDS = frozenset({RunStatus.WAITING, RunStatus.HELD, RunStatus.ASSIGNED, RunStatus.STARTED})  # has/asks capacity


class PlanStatus(str, Enum):
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class TaskRun:
    status: RunStatus
    attempt: int = 1
    resource_id: str | None = None      # the resource proposed / granted for this attempt
    assigned_at_ms: int | None = None   # when this attempt was dispatched
    deadline_ms: int | None = None      # no outcome by then: timed out
    due_ms: int | None = None           # RETRY / UNPLACED: when to try again
    failures: int = 0                   # failed or timed-out attempts so far (retry budget)
    percent: float = 0.0
    actual_hours: float = 0.0
    actual_cost: float = 0.0
    cost_per_hour: float = 0.0          # of the granted resource
    tried: tuple[str, ...] = ()         # resources that refused this attempt


@dataclass(frozen=True)
class PlanState:
    """What the planner keeps per plan: the current version, the goal's fingerprint (to
    tell a replay from an edited re-send), which tasks ran, which risks were alerted."""

    plan: Plan
    goal_digest: str
    runs: Mapping[str, TaskRun] = field(default_factory=lambda: MappingProxyType({}))
    alerted: frozenset[str] = frozenset()
    finished_at_ms: int | None = None     # set once nothing more can happen; state may then expire
    goal: Goal | None = None              # the goal as planned (replans need it)
    status: PlanStatus = PlanStatus.ACTIVE
    end_reason: str = ""
    stopped: bool = False                 # control STOP for this plan: nothing new goes out
    hold: str = ""                        # budget hold: nothing goes out until a RESUME
    seen: tuple[str, ...] = ()            # recent feedback ids (duplicates are ignored)
    last_progress_ms: int | None = None   # last progress version (coalescing)
    last_check_ms: int | None = None      # last drift check / drift replan
    replans: int = 0                      # replans after a task failed for good
    budget_ok: bool = False               # the budget check passed (or a person overrode a hold)

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
    feedback_id: str = ""    # the record's event id: a repeat is ignored
    produced: tuple[str, ...] | None = None   # files the run created (None: not reported, not checked)
    exit_status: int | None = None


@dataclass(frozen=True)
class Decision:
    """A resource ledger's answer, routed back to the plan's partition."""

    plan_id: str
    task_id: str
    attempt: int
    resource_id: str
    decision: str            # GRANTED | REFUSED | RELEASED
    reason: str = ""
    waiting: bool = False
    cost_estimate: float = 0.0


@dataclass(frozen=True)
class Control:
    command: str             # STOP | RESUME | CANCEL
    plan_id: str
    reason: str = ""
    by: str = ""
    at_ms: int = 0


@dataclass(frozen=True)
class Live:
    """What the wiring knows besides the plan: the time, the concrete resources (global
    view), whether everything is stopped, and the capacities a replan schedules against."""

    now_ms: int
    resources: tuple[Resource, ...] = ()
    halted: bool = False
    capacities: Mapping[str, float] = field(default_factory=dict)

    def resource(self, rid: str | None) -> Resource | None:
        return next((r for r in self.resources if r.resource_id == rid), None)


@dataclass(frozen=True)
class Figures:
    """Progress and earned value published with a plan version."""

    progress_pct: float = 0.0
    variance_hours: float = 0.0
    spi: float = 1.0
    cpi: float = 1.0
    pv: float = 0.0
    ev: float = 0.0
    ac: float = 0.0
    budget_variance: float = 0.0
    cost_estimate: float = 0.0


# Domain events -----------------------------------------------------------------------

@dataclass(frozen=True)
class PlanCreated:
    plan: Plan


@dataclass(frozen=True)
class PlanUpdated:
    plan: Plan
    previous: Plan
    figures: Figures = Figures()
    status: str = "ACTIVE"
    trigger: str = ""


@dataclass(frozen=True)
class TaskAssigned:
    plan: Plan
    task: ScheduledTask
    attempt: int
    resource_id: str | None = None
    assigned_at_ms: int | None = None   # None: the planned start (unmanaged hand-out)
    deadline_ms: int | None = None


@dataclass(frozen=True)
class AllocationRequested:
    request: AllocationRequest


@dataclass(frozen=True)
class AllocationReleased:
    """Give an attempt's booking back to its resource's ledger (outcome feeds its breaker)."""

    resource_id: str
    plan_id: str
    task_id: str
    attempt: int
    outcome: str = ""        # SUCCESS | FAILURE | ''
    at_ms: int = 0


@dataclass(frozen=True)
class RiskAlerted:
    plan: Plan
    risk: Risk


@dataclass(frozen=True)
class RefineRequested:
    plan: Plan
    goal: Goal
    capacities: Mapping[str, float]
    kind: str = "refine"     # refine: CP-SAT; decompose: ask the LLM decomposer (processors/llm_plan.py)


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


Event = Union[PlanCreated, PlanUpdated, TaskAssigned, RiskAlerted, RefineRequested, TaskReported, Ignored,
              AllocationRequested, AllocationReleased]
Result = tuple["PlanState | None", tuple[Event, ...]]


def goal_digest(goal: Goal) -> str:
    """A fingerprint of everything the goal says (its fields are plain values). Learned
    estimates are the planner's, not the author's: left out, and the text is the one from
    before Goal had them, so stored fingerprints stay valid."""
    text = repr(dataclasses.replace(goal, estimates=()))
    return hashlib.sha256(text.replace(", estimates=())", ")").encode()).hexdigest()[:32]


def deadline_passed(goal: Goal, received_at_ms: int) -> bool:
    d = goal.constraints.deadline_hours
    return d is not None and goal.created_at_ms + d * HOUR_MS <= received_at_ms


def _flag_past_deadline(plan: Plan) -> Plan:
    """A plan for a goal whose deadline had passed when it arrived: kept, never auto-approved."""
    violations = plan.violations + ("deadline already passed when the goal arrived",)
    state = ApprovalState.PENDING if plan.approval is ApprovalState.AUTO_APPROVED else plan.approval
    return dataclasses.replace(plan, violations=violations, approval=state)


SEEN_KEEP = 256                 # feedback ids remembered per plan (duplicates within them are ignored)
MAX_FAILURE_REPLANS = 1         # replans after a task failed for good; then the plan fails
UNPLACED_RETRY_MS = 1_000       # a task no resource can take now is tried again this much later
REQUEST_RETRY_MS = 5_000        # a request with no decision this long is sent again (the ledger is idempotent)


def _approved(plan: Plan) -> bool:
    return plan.approval in (ApprovalState.APPROVED, ApprovalState.AUTO_APPROVED)


def _alerts(state: PlanState, config: PlanningConfig, events: list[Event]) -> PlanState:
    """Alerts for the plan's risks not alerted yet."""
    new_alerts = [k for k in risk.alerts(state.plan.risks, config) if k.risk_id not in state.alerted]
    events.extend(RiskAlerted(state.plan, k) for k in new_alerts)
    if new_alerts:
        state = dataclasses.replace(state, alerted=state.alerted | {k.risk_id for k in new_alerts})
    return state


def _alert(plan: Plan, risk_id: str, category: RiskCategory, title: str, description: str,
           task_ids: tuple[str, ...], severity: Severity = Severity.HIGH) -> RiskAlerted:
    """An operational alert (lost resource, stuck task, budget hold) on risks.alerts."""
    return RiskAlerted(plan, Risk(risk_id=risk_id, category=category, title=title, probability=1.0, impact=0.7,
                                  severity=severity, task_ids=task_ids, description=description))


def _blocked(state: PlanState, live: Live | None) -> bool:
    return state.stopped or bool(state.hold) or (live is not None and live.halted)


def deadline_hours(st: ScheduledTask, config: PlanningConfig) -> float:
    """How long an attempt may run without an outcome: the configured timeout, or the task's
    own pessimistic estimate when that is longer."""
    return max(config.default_task_timeout_hours, st.task.estimate.pessimistic)


def _send(state: PlanState, tid: str, run: TaskRun, live: Live | None, config: PlanningConfig,
          events: list[Event]) -> TaskRun:
    """Dispatch an attempt (exactly once: the run leaves every state that leads here)."""
    st = state.plan.task(tid)
    if live is None:  # no clock (replay of the plain lifecycle): the planned start stands
        events.append(TaskAssigned(state.plan, st, run.attempt, run.resource_id))
        return dataclasses.replace(run, status=RunStatus.ASSIGNED, due_ms=None)
    deadline = attempt_deadline_ms(live.now_ms, deadline_hours(st, config))
    events.append(TaskAssigned(state.plan, st, run.attempt, run.resource_id, live.now_ms, deadline))
    return dataclasses.replace(run, status=RunStatus.ASSIGNED, assigned_at_ms=live.now_ms, deadline_ms=deadline,
                               due_ms=None, percent=0.0)


def _place(state: PlanState, tid: str, run: TaskRun, live: Live, config: PlanningConfig,
           events: list[Event]) -> TaskRun:
    """Propose a resource for an attempt: an allocation request to its ledger, or UNPLACED."""
    st = state.plan.task(tid)
    candidates = [r for r in live.resources if r.resource_id not in run.tried]
    r = choose_resource(st.task, candidates, live.now_ms, {}, config)
    if r is None:
        return dataclasses.replace(run, status=RunStatus.UNPLACED, resource_id=None,
                                   due_ms=live.now_ms + UNPLACED_RETRY_MS)
    priority = state.goal.priority if state.goal is not None else Priority.MEDIUM
    events.append(AllocationRequested(request_for(state.plan, tid, run.attempt, r, priority, live.now_ms)))
    return dataclasses.replace(run, status=RunStatus.WAITING, resource_id=r.resource_id,
                               due_ms=live.now_ms + REQUEST_RETRY_MS)


def _ask_again(state: PlanState, tid: str, run: TaskRun, live: Live, events: list[Event]) -> TaskRun:
    """No decision came for a request in time (a lost record, a rebalance): ask the same
    ledger again for the same attempt. A ledger repeats a grant and keeps a queued request."""
    r = live.resource(run.resource_id) or Resource(run.resource_id or "", "")
    priority = state.goal.priority if state.goal is not None else Priority.MEDIUM
    events.append(AllocationRequested(request_for(state.plan, tid, run.attempt, r, priority, live.now_ms)))
    return dataclasses.replace(run, due_ms=live.now_ms + REQUEST_RETRY_MS)


def _budget_check(state: PlanState, live: Live, config: PlanningConfig, events: list[Event]) -> PlanState:
    """Before the first allocation: a plan whose cost on the cheapest fitting resources
    exceeds its budget is held (nothing dispatched) and alerted, not silently scheduled."""
    from .allocation import plan_cost_estimate
    budget = state.goal.constraints.budget if state.goal is not None else None
    if budget is None:
        return state
    chosen = {st.task.task_id: r for st in state.plan.tasks
              if (r := choose_resource(st.task, live.resources, live.now_ms, {}, config)) is not None}
    why = budget_hold(plan_cost_estimate(state.plan, chosen, config), budget)
    if why is None:
        return dataclasses.replace(state, budget_ok=True)
    events.append(_alert(state.plan, f"budget-hold:{state.plan.version}", RiskCategory.EXTERNAL,
                         "Plan held: over budget", why + "; `chimera resume` releases it", ()))
    return dataclasses.replace(state, hold=why)


def _dispatch(state: PlanState, config: PlanningConfig, live: Live | None, events: list[Event]) -> PlanState:
    """Move every task that can go one step further: new ready tasks and retries due are
    placed (allocation requests) or, without concrete resources, handed out directly;
    HELD tasks go out once nothing blocks them."""
    plan = state.plan
    if state.status is not PlanStatus.ACTIVE or not _approved(plan):
        return state
    managed = live is not None and bool(live.resources)
    if managed and not state.budget_ok and not state.hold:
        state = _budget_check(state, live, config, events)
    blocked = _blocked(state, live)
    changes: dict[str, TaskRun] = {}
    to_place: list[tuple[str, TaskRun]] = []
    for tid, run in state.runs.items():
        if run.status is RunStatus.HELD and not blocked:
            changes[tid] = _send(state, tid, run, live, config, events)
        elif (run.status is RunStatus.WAITING and live is not None and run.due_ms is not None
              and run.due_ms <= live.now_ms and run.resource_id):
            changes[tid] = _ask_again(state, tid, run, live, events)
        elif (run.status in (RunStatus.RETRY, RunStatus.UNPLACED) and live is not None
              and (run.due_ms or 0) <= live.now_ms):
            to_place.append((tid, dataclasses.replace(run, tried=())))
    for st in ready_tasks(plan, state.done, frozenset(state.runs)):
        to_place.append((st.task.task_id, TaskRun(RunStatus.UNPLACED)))
    for tid, run in to_place:
        if managed:
            if not state.hold:   # held over budget: nothing is even proposed until a RESUME
                changes[tid] = _place(state, tid, run, live, config, events)
        elif blocked:
            changes[tid] = dataclasses.replace(run, status=RunStatus.HELD)
        else:
            changes[tid] = _send(state, tid, run, live, config, events)
    return state.with_runs(**changes) if changes else state


def _emit(state: PlanState, config: PlanningConfig, events: list[Event], live: Live | None = None) -> PlanState:
    """Alerts for risks not alerted yet; ready tasks move on once approved."""
    return _dispatch(_alerts(state, config, events), config, live, events)


def figures(state: PlanState, config: PlanningConfig, now_ms: int) -> Figures:
    """Progress %, schedule variance and earned value of a plan as of `now_ms`."""
    import math
    actuals = {t: progress.TaskActual(r.status.value, r.percent, r.actual_hours, r.actual_cost)
               for t, r in state.runs.items()}
    allocated = {t: Resource(r.resource_id, "", cost_per_hour=r.cost_per_hour)
                 for t, r in state.runs.items() if r.resource_id and r.cost_per_hour > 0}
    costs = progress.task_costs(state.plan, config, allocated)
    budget = state.goal.constraints.budget if state.goal is not None else None
    start = baseline_start_ms(state)   # the plan's hours count from when execution began
    shift = (start if start is not None else now_ms) - state.plan.created_at_ms
    ev = progress.earned_value(state.plan, actuals, now_ms - shift, costs, budget)
    estimate = sum(r.actual_cost if r.status is RunStatus.COMPLETED else 0.0 for r in state.runs.values())
    estimate += sum(c for t, c in costs.items()
                    if t not in state.runs or state.runs[t].status is not RunStatus.COMPLETED)

    def f(x: float, default: float = 0.0) -> float:
        return round(x, 6) if math.isfinite(x) else default
    return Figures(f(ev.progress_pct), f(ev.variance_hours), f(ev.spi, 1.0), f(ev.cpi, 1.0), f(ev.pv), f(ev.ev),
                   f(ev.ac), f(ev.budget_variance), f(estimate))


def _version(state: PlanState, plan: Plan, config: PlanningConfig, now_ms: int, trigger: str,
             events: list[Event]) -> PlanState:
    """Publish `plan` as the next version with the plan's figures, status and trigger."""
    new = dataclasses.replace(state, plan=plan)
    if trigger == "progress":
        new = dataclasses.replace(new, last_progress_ms=now_ms)
    events.append(PlanUpdated(plan, state.plan, figures(new, config, now_ms), new.status.value, trigger))
    return new


def _progress(state: PlanState, config: PlanningConfig, now_ms: int, events: list[Event],
              trigger: str = "progress") -> PlanState:
    plan = dataclasses.replace(state.plan, version=state.plan.version + 1, reason=trigger)
    return _version(state, plan, config, now_ms, "progress" if trigger == "progress" else trigger, events)


def _end(state: PlanState, status: PlanStatus, reason: str, config: PlanningConfig, now_ms: int,
         events: list[Event]) -> PlanState:
    """The plan ends: every booking it holds goes back; one last version says how and why."""
    for tid, run in sorted(state.runs.items()):
        if run.status in HOLDS and run.resource_id:
            events.append(AllocationReleased(run.resource_id, state.plan.plan_id, tid, run.attempt, "", now_ms))
    ended = dataclasses.replace(state, status=status, end_reason=reason, finished_at_ms=now_ms)
    plan = dataclasses.replace(state.plan, version=state.plan.version + 1, reason=f"{status.value.lower()}: {reason}")
    return _version(ended, plan, config, now_ms, status.value.lower(), events)


def _replan(state: PlanState, config: PlanningConfig, live: Live | None, now_ms: int, trigger: str, reason: str,
            events: list[Event]) -> PlanState:
    """A new version for the remaining work; completed and running tasks keep their times."""
    if state.goal is None:
        return state
    running = {t for t, r in state.runs.items() if r.status in OUT}
    frac = {t: progress.fraction_done(progress.TaskActual(r.status.value, r.percent)) for t, r in state.runs.items()}
    plan = progress.replan_keeping_done(state.plan, state.goal, done=state.done, running=running, now_ms=now_ms,
                                        capacities=dict(live.capacities) if live else {}, config=config,
                                        reason=reason, progress=frac)
    plan = dataclasses.replace(plan, estimates_source=state.plan.estimates_source)  # same goal, same estimates
    state = _version(state, plan, config, now_ms, trigger, events)
    return _emit(state, config, events, live)


def _fail(state: PlanState, tid: str, run: TaskRun, why: str, config: PlanningConfig, live: Live | None,
          now_ms: int, events: list[Event]) -> PlanState:
    """An attempt failed or timed out: release its booking (a failure for the resource's
    breaker), then retry after a backoff, or give up (replan once, then the plan fails)."""
    if run.resource_id and run.status in HOLDS:
        events.append(AllocationReleased(run.resource_id, state.plan.plan_id, tid, run.attempt, "FAILURE", now_ms))
    failures = run.failures + 1
    decision = retry_decision(failures, now_ms, config)
    if not isinstance(decision, GiveUp):
        state = state.with_runs(**{tid: TaskRun(RunStatus.RETRY, run.attempt + 1, due_ms=decision.at_ms,
                                                failures=failures)})
        return _progress(state, config, now_ms, events, "task_failed")
    reason = progress.failed_after_retries(tid, failures, config) or decision.reason
    if state.replans < MAX_FAILURE_REPLANS and state.goal is not None:
        state = dataclasses.replace(state.with_runs(**{tid: TaskRun(RunStatus.UNPLACED, run.attempt + 1,
                                                                    due_ms=now_ms)}),
                                    replans=state.replans + 1)
        return _replan(state, config, live, now_ms, "failed_after_retries", f"{reason} ({why})", events)
    state = state.with_runs(**{tid: dataclasses.replace(run, status=RunStatus.FAILED, failures=failures)})
    return _end(state, PlanStatus.FAILED, f"{reason}: {why}", config, now_ms, events)


def on_goal(state: PlanState | None, goal: Goal, capacities: Mapping[str, float], config: PlanningConfig,
            *, received_at_ms: int, live: Live | None = None, reuse: "memory.Reuse | None" = None,
            estimates: "tuple[LearnedEstimate, ...]" = (), estimates_source: str | None = None,
            decompose: bool = False) -> Result:
    """The first plan of a goal (fast path) and, when configured, a refinement request.
    A replayed goal changes nothing; an edited re-send of a live plan's goal replans its
    remaining work (trigger goal_changed); an ended plan's goal cannot be edited.
    `reuse` (processors.memory.reuse) plans the goal from a past episode instead: the plan
    records it (plan.memory), and the state and the refinement request carry the goal
    actually planned. Learned `estimates` (the planner's estimator client) ride on the goal
    planned (goal.estimates: refinements and replans use them too); `estimates_source` is
    recorded on the plan. `decompose` (the planner's [triton] decompose, decomposer reachable)
    also asks the LLM decomposer for a breakdown of a goal without explicit tasks, off the
    fast path: its answer comes back through on_decomposed."""
    digest = goal_digest(goal)
    if state is not None:
        if state.goal_digest == digest:
            return state, (Ignored("duplicate_goal", f"goal {goal.goal_id} is already planned"),)
        if state.status is not PlanStatus.ACTIVE or state.goal is None:
            raise PlanningError("goal_edited", f"goal {goal.goal_id} was re-sent with different content; plan "
                                               f"{state.plan.plan_id} v{state.plan.version} has ended: send the "
                                               "change under a new goal_id")
        events: list[Event] = []
        why = progress.goal_changed_trigger(state.goal_digest, digest) or "goal changed"
        changed = dataclasses.replace(state, goal=goal, goal_digest=digest)
        if live is None:
            live = Live(received_at_ms, capacities=capacities)
        new = _replan(changed, config, live, received_at_ms, "goal_changed", why, events)
        return new, tuple(events)
    planned = goal if reuse is None else reuse.goal
    if estimates:
        planned = dataclasses.replace(planned, estimates=tuple(estimates))
    plan, _ = plan_goal(planned, known_capacities=capacities, config=config)
    if reuse is not None:
        plan = dataclasses.replace(plan, strategy=memory.STRATEGY, memory=reuse.use)
    if estimates_source is not None:
        plan = dataclasses.replace(plan, estimates_source=estimates_source)
    if deadline_passed(goal, received_at_ms):
        plan = _flag_past_deadline(plan)
    events = [PlanCreated(plan)]
    new = _emit(PlanState(plan=plan, goal_digest=digest, goal=planned), config, events, live)
    if config.refine_budget_seconds > 0:
        events.append(RefineRequested(plan, planned, MappingProxyType(dict(capacities))))
    if decompose and not goal.tasks and reuse is None:
        events.append(RefineRequested(plan, planned, MappingProxyType(dict(capacities)), kind=llm_plan.REFINE_KIND))
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


def _new_version(state: PlanState, plan: Plan, config: PlanningConfig, *, at_ms: int,
                 live: Live | None = None) -> Result:
    events: list[Event] = [PlanUpdated(plan, state.plan)]
    finished = at_ms if plan.approval is ApprovalState.REJECTED else state.finished_at_ms
    new = _emit(dataclasses.replace(state, plan=plan, finished_at_ms=finished), config, events, live)
    return new, tuple(events)


def on_refined(state: PlanState | None, plan_id: str, base_version: int, refined: Plan,
               config: PlanningConfig, live: Live | None = None) -> Result:
    """Publish a refined schedule as a new version if the plan has not changed meanwhile."""
    state = _require(state, plan_id)
    if refined.plan_id != plan_id:
        raise PlanningError("wrong_plan", f"refinement for {plan_id} carries plan {refined.plan_id}")
    _require_version(state, base_version, "refinement")
    if refined.version != base_version + 1:
        raise PlanningError("stale_version", f"refinement of v{base_version} carries v{refined.version}")
    if state.plan.approval is ApprovalState.REJECTED or state.status is not PlanStatus.ACTIVE:
        return state, (Ignored("plan_rejected", f"{plan_id} was rejected or ended; refinement dropped"),)
    if state.plan.memory is not None:  # the refiner re-planned the remembered tasks: say so again
        refined = dataclasses.replace(refined, strategy=state.plan.strategy, memory=state.plan.memory)
    # the refiner planned the same goal (its learned estimates included): same duration source
    refined = dataclasses.replace(refined, estimates_source=state.plan.estimates_source)
    return _new_version(state, approval.keep_decision(state.plan, refined), config, at_ms=0, live=live)


def on_decomposed(state: PlanState | None, plan_id: str, base_version: int, llm: Plan, answer: str,
                  config: PlanningConfig, live: Live | None = None) -> Result:
    """The LLM decomposer's plan for `base_version` (planned by the refiner from `answer`):
    a new version if it is still safe to swap the task list and it judges better
    (llm_plan.judge), else an Ignored with the reason; never an error, since a late or
    losing breakdown is an expected outcome. Safe means: the plan is active, not rejected,
    still at base_version (nothing changed meanwhile: no refinement, replan or approval
    decision) and no task of it has a run yet (nothing dispatched, requested or held): task
    ids of the two breakdowns have nothing in common, so a run could not be carried over.
    The answer is parsed again here (the state keeps the goal as planned, explicit tasks
    included, so replans keep the LLM's breakdown)."""
    state = _require(state, plan_id)
    if llm.plan_id != plan_id:
        raise PlanningError("wrong_plan", f"decomposition for {plan_id} carries plan {llm.plan_id}")
    if state.plan.approval is ApprovalState.REJECTED or state.status is not PlanStatus.ACTIVE:
        return state, (Ignored("llm_plan_ended", f"{plan_id} was rejected or ended; LLM breakdown dropped"),)
    if state.plan.version != base_version or llm.version != base_version + 1:
        return state, (Ignored("llm_plan_changed", f"{plan_id} is at v{state.plan.version}; the LLM breakdown "
                                                   f"was for v{base_version}"),)
    if state.runs:
        return state, (Ignored("llm_already_dispatched", f"{plan_id}: tasks {sorted(state.runs)[:5]} already have "
                                                         "runs; the task list can no longer be replaced"),)
    if state.goal is None or state.goal.tasks:
        return state, (Ignored("llm_not_applicable", f"{plan_id}: the goal has an explicit breakdown"),)
    try:
        specs = llm_plan.parse(answer, state.goal)
    except llm_plan.Rejected as exc:
        return state, (Ignored(f"llm_rejected:{exc.reason}", exc.detail),)
    if {st.task.task_id for st in llm.tasks} != {s.task_id for s in specs}:
        raise PlanningError("wrong_plan", f"decomposition for {plan_id}: the plan's tasks are not the answer's")
    wins, why = llm_plan.judge(state.goal, state.plan, llm)
    if not wins:
        return state, (Ignored("llm_not_better", why),)
    llm = dataclasses.replace(llm, reason=f"{llm.reason}; {why}")
    if any("deadline already passed" in v for v in state.plan.violations):
        llm = _flag_past_deadline(llm)
    # other work than the template's: its own approval state (no person's decision carries
    # over), and a budget check of its own before anything is placed
    # the durations it was judged with (the template's, llm_plan.priced), so replans keep them
    specs = llm_plan.priced(state.goal, specs, config)
    state = dataclasses.replace(state, goal=llm_plan.goal_with(state.goal, specs), hold="", budget_ok=False)
    return _new_version(state, llm, config, at_ms=0, live=live)


def on_approval(state: PlanState | None, decision: Approval, config: PlanningConfig,
                live: Live | None = None) -> Result:
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
    return _new_version(state, plan, config, at_ms=decision.decided_at_ms, live=live)


def on_feedback(state: PlanState | None, fb: Feedback, config: PlanningConfig, live: Live | None = None) -> Result:
    """Progress of a task handed out in the current attempt; COMPLETED releases successors,
    FAILED retries with backoff or gives up. Publishes progress versions (coalesced: at most
    one per progress_interval_seconds, always at a completion or failure)."""
    state = _require(state, fb.plan_id)
    try:
        state.plan.task(fb.task_id)
    except KeyError:
        raise PlanningError("unknown_task", f"{fb.plan_id} v{state.plan.version} has no task {fb.task_id!r}") from None
    if fb.feedback_id and fb.feedback_id in state.seen:
        return state, (Ignored("duplicate_feedback", f"feedback {fb.feedback_id} was applied already"),)
    if state.status is not PlanStatus.ACTIVE:
        return state, (Ignored("plan_ended", f"{fb.plan_id} is {state.status.value}"),)
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
    now = live.now_ms if live is not None else fb.reported_at_ms
    if fb.feedback_id:
        state = dataclasses.replace(state, seen=(state.seen + (fb.feedback_id,))[-SEEN_KEEP:])
    if fb.status == "CANCELLED":
        return _interrupted(state, fb.task_id, run, config, live, now)
    status = RunStatus.STARTED if fb.status == "PROGRESS" else RunStatus(fb.status)
    events: list[Event] = []
    if status is not run.status:
        events.append(TaskReported(fb.plan_id, fb.task_id, status))
    if status is RunStatus.FAILED:
        new = _fail(state, fb.task_id, run, fb.message or "failed", config, live, now, events)
        return new, tuple(events)
    if status is RunStatus.STARTED:
        pct = max(run.percent, min(100.0, max(0.0, fb.progress_pct)))
        new = state.with_runs(**{fb.task_id: dataclasses.replace(run, status=status, percent=pct)})
        if progress.coalesce(state.last_progress_ms, now, round(config.progress_interval_seconds * 1000), fb.status):
            new = _progress(new, config, now, events)
        return new, tuple(events)
    # COMPLETED
    st = state.plan.task(fb.task_id)
    broken = _inconsistent(st, fb)
    if broken:   # expected vs actual: a categorised violation is an alert and a failed attempt
        events[:] = [TaskReported(fb.plan_id, fb.task_id, RunStatus.FAILED)]
        why = "consistency: " + "; ".join(f"{v.category}: {v.detail}" for v in broken)
        events.append(_alert(state.plan, f"consistency:{fb.task_id}:{run.attempt}", RiskCategory.TECHNICAL,
                             f"Task {fb.task_id} output check failed: "
                             + ", ".join(sorted({v.category for v in broken})), why, (fb.task_id,)))
        return _fail(state, fb.task_id, run, why, config, live, now, events), tuple(events)
    if fb.actual_hours is not None:
        hours = fb.actual_hours
    elif run.assigned_at_ms is not None:
        hours = max(0.0, (fb.reported_at_ms - run.assigned_at_ms) / HOUR_MS)
    else:
        hours = st.finish_hours - st.start_hours
    done_run = dataclasses.replace(run, status=status, percent=100.0, actual_hours=hours,
                                   actual_cost=round(hours * run.cost_per_hour, 4))
    new = state.with_runs(**{fb.task_id: done_run})
    if run.resource_id:
        events.append(AllocationReleased(run.resource_id, fb.plan_id, fb.task_id, run.attempt, "SUCCESS", now))
    new = _emit(new, config, events, live)
    if len(new.done) == len(new.plan.tasks):
        new = _end(new, PlanStatus.COMPLETED, "every task completed", config, fb.reported_at_ms, events)
    else:
        new = _progress(new, config, now, events)
    return new, tuple(events)


def _inconsistent(st: ScheduledTask, fb: Feedback) -> tuple:
    if fb.produced is None:
        return ()
    from . import consistency
    return consistency.violations(consistency.expectation(consistency.task_fields(st.task)),
                                  consistency.Produced(fb.produced, fb.exit_status))


def _interrupted(state: PlanState, tid: str, run: TaskRun, config: PlanningConfig, live: Live | None,
                 now_ms: int) -> Result:
    """An executor interrupted the attempt (CANCELLED: an emergency stop of its plan). Not the
    task's failure: the booking goes back (no breaker outcome) and the task runs again as a
    new attempt, which waits (HELD) while the plan is stopped and goes out on RESUME."""
    events: list[Event] = []
    if run.resource_id:
        events.append(AllocationReleased(run.resource_id, state.plan.plan_id, tid, run.attempt, "", now_ms))
    again = TaskRun(RunStatus.UNPLACED, run.attempt + 1, due_ms=now_ms, failures=run.failures)
    new = _dispatch(state.with_runs(**{tid: again}), config, live, events)
    return new, tuple(events)


def on_allocation(state: PlanState | None, d: Decision, config: PlanningConfig, live: Live | None = None) -> Result:
    """A ledger's decision on this plan's request: GRANTED dispatches the attempt (or holds it
    while the plan is stopped), REFUSED tries another resource unless the request waits in the
    ledger's queue. A grant nobody wants any more (stale attempt, ended plan) is given back."""
    state = _require(state, d.plan_id)
    now = live.now_ms if live is not None else 0
    if d.decision == "RELEASED":
        return state, (Ignored("released", f"{d.task_id} attempt {d.attempt} on {d.resource_id}"),)
    run = state.runs.get(d.task_id)
    mine = run is not None and run.attempt == d.attempt and run.resource_id == d.resource_id
    if state.status is not PlanStatus.ACTIVE or not mine or run.status is not RunStatus.WAITING:
        events: list[Event] = []
        if d.decision == "GRANTED" and not (mine and state.status is PlanStatus.ACTIVE
                                             and run.status in (RunStatus.HELD, RunStatus.ASSIGNED,
                                                                RunStatus.STARTED)):
            events.append(AllocationReleased(d.resource_id, d.plan_id, d.task_id, d.attempt, "", now))
        events.append(Ignored("stale_allocation", f"{d.decision} for {d.task_id} attempt {d.attempt} "
                                                  f"on {d.resource_id}"))
        return state, tuple(events)
    events = []
    if d.decision == "GRANTED":
        r = live.resource(d.resource_id) if live is not None else None
        hours = state.plan.task(d.task_id).task.estimate.expected
        cph = r.cost_per_hour if r is not None else (d.cost_estimate / hours if hours > 0 else 0.0)
        run = dataclasses.replace(run, cost_per_hour=cph)
        if _blocked(state, live):
            run = dataclasses.replace(run, status=RunStatus.HELD)
        else:
            run = _send(state, d.task_id, run, live, config, events)
        return state.with_runs(**{d.task_id: run}), tuple(events)
    if d.waiting:   # queued at the ledger: granted when capacity is released; asked again only much later
        queued = dataclasses.replace(run, due_ms=now + 12 * REQUEST_RETRY_MS)
        return state.with_runs(**{d.task_id: queued}), (Ignored("allocation_queued", f"{d.task_id} waits for {d.resource_id}"),)
    run = dataclasses.replace(run, tried=run.tried + (d.resource_id,))
    if live is None or not live.resources:
        run = dataclasses.replace(run, status=RunStatus.UNPLACED, resource_id=None, due_ms=now + UNPLACED_RETRY_MS)
    else:
        run = _place(state, d.task_id, run, live, config, events)
    return state.with_runs(**{d.task_id: run}), tuple(events)


def _lost(state: PlanState, lost: frozenset[str], config: PlanningConfig, live: Live, events: list[Event]
          ) -> tuple[PlanState, tuple[str, ...]]:
    """Tasks holding capacity on a lost resource: release it, alert, and make them ready for a
    new attempt elsewhere. Returns the new state and the tasks that were moved."""
    hit = {t: r for t, r in state.runs.items() if r.status in HOLDS and r.resource_id in lost}
    if not hit:
        return state, ()
    for rid in sorted({r.resource_id for r in hit.values()}):
        tids = tuple(sorted(t for t, r in hit.items() if r.resource_id == rid))
        events.append(_alert(state.plan, f"resource-lost:{rid}:{state.plan.version}:" + ",".join(tids),
                             RiskCategory.RESOURCE, f"Resource {rid} lost",
                             f"resource {rid} is unhealthy or silent; its tasks are reallocated: {', '.join(tids)}",
                             tids))
    changes = {}
    for t, r in sorted(hit.items()):
        events.append(AllocationReleased(r.resource_id, state.plan.plan_id, t, r.attempt, "", live.now_ms))
        changes[t] = TaskRun(RunStatus.UNPLACED, r.attempt + 1, due_ms=live.now_ms, failures=r.failures)
    return state.with_runs(**changes), tuple(sorted(hit))


def on_tick(state: PlanState | None, plan_id: str, kind: str, config: PlanningConfig, live: Live,
            lost: frozenset[str] = frozenset()) -> Result:
    """What a timer found due for this plan: RESOURCE_LOST (reallocate, alert; replan when no
    resource can take the tasks), timeouts (alert, then a failed attempt), retries and
    waiting placements due, held tasks once nothing blocks them (RESUME), and the periodic
    drift check (enable_continuous_replanning, every replanning_interval_minutes)."""
    state = _require(state, plan_id)
    if state.status is not PlanStatus.ACTIVE:
        return state, (Ignored("plan_ended", f"{plan_id} is {state.status.value}"),)
    now = live.now_ms
    before = state
    events: list[Event] = []
    moved: tuple[str, ...] = ()
    if kind == "RESOURCE_LOST" and lost:
        state, moved = _lost(state, lost, config, live, events)
    for tid, run in sorted(state.runs.items()):
        if run.status in OUT and run.deadline_ms is not None and run.deadline_ms <= now:
            events.append(_alert(state.plan, f"stuck:{tid}:{run.attempt}", RiskCategory.TIMELINE,
                                 f"Task {tid} stuck", f"no outcome for attempt {run.attempt} by its deadline; "
                                 "retried", (tid,)))
            state = _fail(state, tid, run, "timed out", config, live, now, events)
            if state.status is not PlanStatus.ACTIVE:
                return state, tuple(events)
    state = _dispatch(state, config, live, events)
    stuck = tuple(t for t in moved if state.runs[t].status is RunStatus.UNPLACED)
    if stuck:
        why = progress.lost_capacity_trigger(state.plan, stuck, live.resources, now, {}, config)
        if why:
            state = _replan(state, config, live, now, "lost_capacity", why, events)
    if config.enable_continuous_replanning and state.goal is not None and _drift_check_due(state, config, now):
        state = dataclasses.replace(state, last_check_ms=now)
        if any(r.status in OUT or r.status is RunStatus.COMPLETED for r in state.runs.values()):
            f = figures(state, config, now)
            ev = progress.EarnedValue(0, 0, f.pv, f.ev, f.ac, f.spi, f.cpi, 0, 0, 0, f.variance_hours, 0, 0,
                                      f.progress_pct)
            why = progress.drift_trigger(ev, config)
            if why:
                state = _replan(state, config, live, now, "drift", why, events)
    if state == before and not events:
        return state, (Ignored("nothing_due", plan_id),)
    return state, tuple(events)


def _drift_check_due(state: PlanState, config: PlanningConfig, now_ms: int) -> bool:
    at = drift_check_at(state, config)
    return at is not None and now_ms >= at


def baseline_start_ms(state: PlanState) -> int | None:
    """When execution began (the first assignment still on record): the earned-value baseline
    starts there, not at the goal's creation, so a goal written long ago and planned today is
    not late from its first second. None before anything was handed out."""
    return min((r.assigned_at_ms for r in state.runs.values() if r.assigned_at_ms is not None), default=None)


def drift_check_at(state: PlanState, config: PlanningConfig) -> int | None:
    """The next drift check: an interval after the last one, or after execution began."""
    last = state.last_check_ms if state.last_check_ms is not None else baseline_start_ms(state)
    return None if last is None else last + config.replanning_interval_minutes * 60_000


def on_control(state: PlanState | None, c: Control, config: PlanningConfig, live: Live | None = None) -> Result:
    """STOP: nothing new goes out for this plan (granted tasks wait, HELD); RESUME: held tasks
    go out (it also releases a budget hold); CANCEL: the plan ends, its bookings go back."""
    state = _require(state, c.plan_id)
    if state.status is not PlanStatus.ACTIVE:
        return state, (Ignored("plan_ended", f"{c.plan_id} is {state.status.value}"),)
    events: list[Event] = []
    if c.command == "STOP":
        if state.stopped:
            return state, (Ignored("already_stopped", c.plan_id),)
        return dataclasses.replace(state, stopped=True), ()
    if c.command == "RESUME":
        if not state.stopped and not state.hold:
            return state, (Ignored("not_stopped", c.plan_id),)
        new = _dispatch(dataclasses.replace(state, stopped=False, hold="", budget_ok=state.budget_ok or bool(state.hold)),
                        config, live, events)
        return new, tuple(events)
    if c.command == "CANCEL":
        now = live.now_ms if live is not None else c.at_ms
        why = c.reason or f"cancelled by {c.by or 'unknown'}"
        return _end(state, PlanStatus.CANCELLED, why, config, now, events), tuple(events)
    raise PlanningError("unknown_command", f"control command {c.command!r}")


def next_due_ms(state: PlanState, config: PlanningConfig) -> int | None:
    """When a timer should next look at this plan (retries, deadlines, placements, drift), or None.

    Only what a DUE tick then acts on (`_dispatch`'s conditions): a plan waiting for a person's
    approval or held over budget places and asks nothing until that approval or RESUME, which
    dispatch themselves; reporting its retries as due had the timer tick it every second for
    nothing. A DUE tick at or after this time always leaves the plan due later."""
    if state.status is not PlanStatus.ACTIVE:
        return None
    approved = _approved(state.plan)
    times = [r.due_ms for r in state.runs.values() if r.due_ms is not None and approved
             and (r.status is RunStatus.WAITING
                  or (r.status in (RunStatus.RETRY, RunStatus.UNPLACED) and not state.hold))]
    times += [r.deadline_ms for r in state.runs.values() if r.status in OUT and r.deadline_ms is not None]
    if config.enable_continuous_replanning and state.goal is not None and state.runs:
        at = drift_check_at(state, config)
        if at is not None:
            times.append(at)
    return min(times, default=None)


def resources_in_use(state: PlanState) -> tuple[str, ...]:
    """Resources this plan holds or asks capacity on (a timer checks them for loss)."""
    if state.status is not PlanStatus.ACTIVE:
        return ()
    return tuple(sorted({r.resource_id for r in state.runs.values() if r.status in HOLDS and r.resource_id}))


def held(state: PlanState) -> bool:
    """Tasks wait only because everything was stopped (a resume of all plans moves them)."""
    return (state.status is PlanStatus.ACTIVE and not state.stopped and not state.hold
            and any(r.status is RunStatus.HELD for r in state.runs.values()))


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
