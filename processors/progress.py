"""Progress, earned value and replanning (Layer 2 progress tracker), pure.

Inputs are the plan (planned times in hours after `created_at_ms`), each task's actual
state (`TaskActual`, from execution.feedback) and the time of the question (epoch ms);
outputs are plain values the wiring publishes on plans.updated. Replanning triggers are
predicates returning a reason (the new version's `reason`) or None.

    progress_pct(plan, actuals) -> float
    earned_value(plan, actuals, as_of_ms, task_costs, budget=None) -> EarnedValue
    coalesce(last_published_ms, now_ms, interval_ms, status) -> bool
    failed_after_retries / drift_trigger / lost_capacity_trigger / goal_changed_trigger -> str | None
    replan_keeping_done(plan, goal, done=..., running=..., now_ms=..., capacities=..., config=..., reason=...) -> Plan
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from . import approval, risk, validation
from .allocation import Resource, choose_resource, heartbeat_timeout_ms, usable
from .config import PlanningConfig
from .model import ApprovalState, Estimate, Goal, Plan, ScheduledTask
from .resources import EPS
from .retry import HOUR_MS, Breaker

TERMINAL = frozenset({"COMPLETED", "FAILED"})


@dataclass(frozen=True)
class TaskActual:
    """What feedback says about one task. `status` takes lifecycle.RunStatus values
    (a str enum, or the same strings); `percent` is 0..100 as reported by PROGRESS."""

    status: str
    percent: float = 0.0
    actual_hours: float = 0.0
    actual_cost: float = 0.0


def fraction_done(actual: TaskActual | None) -> float:
    """COMPLETED counts whole, STARTED its reported percent, anything else (a FAILED
    attempt included: its work is redone) nothing."""
    if actual is None:
        return 0.0
    if actual.status == "COMPLETED":
        return 1.0
    if actual.status == "STARTED":
        return min(1.0, max(0.0, actual.percent / 100.0))
    return 0.0


def progress_pct(plan: Plan, actuals: Mapping[str, TaskActual]) -> float:
    """Plan progress %, weighted by each task's planned duration."""
    total = sum(st.finish_hours - st.start_hours for st in plan.tasks)
    if total <= EPS:
        return 100.0 * (sum(fraction_done(actuals.get(st.task.task_id)) for st in plan.tasks)
                        / max(1, len(plan.tasks)))
    done = sum((st.finish_hours - st.start_hours) * fraction_done(actuals.get(st.task.task_id))
               for st in plan.tasks)
    return 100.0 * done / total


def planned_fraction(st: ScheduledTask, at_hours: float) -> float:
    """How much of a task the schedule says is done at `at_hours` (linear over its window)."""
    if at_hours >= st.finish_hours:
        return 1.0
    if at_hours <= st.start_hours:
        return 0.0
    return (at_hours - st.start_hours) / (st.finish_hours - st.start_hours)


def hours_since_start(plan: Plan, at_ms: int) -> float:
    return (at_ms - plan.created_at_ms) / HOUR_MS


@dataclass(frozen=True)
class EarnedValue:
    """Earned-value figures as of one time. Positive variances are good (ahead, under)."""

    at_hours: float               # actual time (AT), hours after the plan's start
    bac: float                    # budget at completion: sum of task costs
    pv: float                     # planned value: cost of the work scheduled by now
    ev: float                     # earned value: cost of the work done by now
    ac: float                     # actual cost so far
    spi: float                    # EV / PV (1.0 while nothing was planned yet)
    cpi: float                    # EV / AC (1.0 while nothing was spent)
    sv: float                     # EV - PV (money)
    cv: float                     # EV - AC
    earned_schedule_hours: float  # when the plan said EV would be earned
    variance_hours: float         # earned schedule - AT (negative: behind)
    eac: float                    # estimate at completion: AC + (BAC - EV) / CPI
    budget_variance: float        # (budget, or BAC without one) - EAC
    progress_pct: float


def _pv_at(plan: Plan, costs: Mapping[str, float], t: float) -> float:
    return sum(costs.get(st.task.task_id, 0.0) * planned_fraction(st, t) for st in plan.tasks)


def earned_schedule(plan: Plan, costs: Mapping[str, float], ev: float) -> float:
    """The earliest time at which planned value reaches `ev` (PV is piecewise linear between
    task starts and finishes, so it is found exactly on that grid)."""
    points = sorted({0.0, *(st.start_hours for st in plan.tasks), *(st.finish_hours for st in plan.tasks)})
    prev_t, prev_v = points[0], _pv_at(plan, costs, points[0])
    if ev <= prev_v + EPS:
        return prev_t
    for t in points[1:]:
        v = _pv_at(plan, costs, t)
        if v + EPS >= ev:
            return prev_t + (t - prev_t) * (ev - prev_v) / (v - prev_v) if v > prev_v else t
        prev_t, prev_v = t, v
    return prev_t


def earned_value(plan: Plan, actuals: Mapping[str, TaskActual], as_of_ms: int,
                 task_costs: Mapping[str, float], budget: float | None = None) -> EarnedValue:
    """PV, EV, AC, SPI, CPI, variances and EAC as of `as_of_ms`. `task_costs` is each task's
    planned cost (`task_costs(...)`), the basis of PV and EV."""
    at = hours_since_start(plan, as_of_ms)
    bac = sum(task_costs.get(st.task.task_id, 0.0) for st in plan.tasks)
    pv = _pv_at(plan, task_costs, at)
    ev = sum(task_costs.get(st.task.task_id, 0.0) * fraction_done(actuals.get(st.task.task_id))
             for st in plan.tasks)
    ac = sum(a.actual_cost for a in actuals.values())
    spi = ev / pv if pv > EPS else 1.0
    cpi = ev / ac if ac > EPS else 1.0
    eac = ac + (bac - ev) / cpi if cpi > EPS else math.inf
    es = earned_schedule(plan, task_costs, ev)
    return EarnedValue(at, bac, pv, ev, ac, spi, cpi, ev - pv, ev - ac, es, es - at, eac,
                       (bac if budget is None else budget) - eac, progress_pct(plan, actuals))


def task_costs(plan: Plan, config: PlanningConfig, allocated: Mapping[str, Resource] | None = None
               ) -> dict[str, float]:
    """Planned cost per task: expected hours x the allocated resource's cost per hour, or
    the planner's rate-based estimate for a task not allocated yet."""
    from .planner import estimate_cost
    allocated = allocated or {}
    out = {}
    for st in plan.tasks:
        r = allocated.get(st.task.task_id)
        out[st.task.task_id] = (st.task.estimate.expected * r.cost_per_hour if r is not None
                                else estimate_cost([st.task], config).total)
    return out


def coalesce(last_published_ms: int | None, now_ms: int, interval_ms: int, status: str) -> bool:
    """Publish a progress version now? Always at a task's completion or failure; otherwise
    at most one per plan per `interval_ms` (progress_interval_seconds)."""
    if status in TERMINAL or last_published_ms is None:
        return True
    return now_ms - last_published_ms >= interval_ms


# ------------------------------------------------------------------ replanning triggers

def failed_after_retries(task_id: str, attempt: int, config: PlanningConfig) -> str | None:
    """Attempt `attempt` of a task failed and it was the last one allowed."""
    if attempt >= config.max_task_attempts:
        return f"task {task_id} failed after {attempt} attempt(s)"
    return None


def drift_trigger(ev: EarnedValue, config: PlanningConfig) -> str | None:
    """Schedule variance or SPI beyond the configured thresholds (once work was planned)."""
    if abs(ev.variance_hours) > config.replan_variance_hours + EPS:
        return (f"schedule variance {ev.variance_hours:+.2f} h beyond "
                f"+/-{config.replan_variance_hours:g} h")
    if ev.pv > EPS and ev.spi < config.replan_spi_threshold - EPS:
        return f"SPI {ev.spi:.2f} below {config.replan_spi_threshold:g}"
    return None


def reallocate(plan: Plan, task_ids: Iterable[str], resources: Iterable[Resource], now_ms: int,
               breakers: Mapping[str, Breaker], config: PlanningConfig
               ) -> tuple[dict[str, Resource], tuple[str, ...]]:
    """New candidates for tasks whose resource was lost: (task -> resource, tasks nobody can
    take). Candidates are proposals: each still goes through its resource's ledger."""
    resources = tuple(resources)
    placed: dict[str, Resource] = {}
    stuck: list[str] = []
    for tid in sorted(set(task_ids)):
        r = choose_resource(plan.task(tid).task, resources, now_ms, breakers, config)
        if r is None:
            stuck.append(tid)
        else:
            placed[tid] = r
    return placed, tuple(stuck)


def lost_resources(resources: Iterable[Resource], now_ms: int, config: PlanningConfig) -> tuple[str, ...]:
    """Ids of resources that are unhealthy or silent past the heartbeat timeout."""
    timeout = heartbeat_timeout_ms(config)
    return tuple(sorted(r.resource_id for r in resources if not usable(r, now_ms, timeout)))


def lost_capacity_trigger(plan: Plan, task_ids: Iterable[str], resources: Iterable[Resource], now_ms: int,
                          breakers: Mapping[str, Breaker], config: PlanningConfig) -> str | None:
    """Tasks on lost capacity that no remaining resource can take: the plan must change."""
    _, stuck = reallocate(plan, task_ids, resources, now_ms, breakers, config)
    if stuck:
        return f"lost capacity: no resource can take {', '.join(stuck)}"
    return None


def goal_changed_trigger(previous_digest: str, new_digest: str) -> str | None:
    """Same goal id, different content (lifecycle.goal_digest of each)."""
    if previous_digest != new_digest:
        return "goal changed"
    return None


# ------------------------------------------------------------------ replanning

def replan_keeping_done(plan: Plan, goal: Goal, *, done: Iterable[str], running: Iterable[str], now_ms: int,
                        capacities: Mapping[str, float], config: PlanningConfig, reason: str,
                        progress: Mapping[str, float] | None = None) -> Plan:
    """A new version that reschedules only the remaining tasks; completed and running tasks
    keep their scheduled times exactly.

    The remaining tasks are scheduled by the planner's own scheduler from `now_ms` on,
    together with one stand-in per running task for the time it still needs (so a
    successor waits for it and capacity it holds is respected). Dependencies on completed
    tasks are met already. If the scheduler would delay a stand-in (a running task cannot
    be moved), the remaining tasks are instead scheduled after every running task.
    A person's approval stands (the work is the same; see approval.keep_decision)."""
    from .planner import FAST_ITERATIONS, build_problem, derive_milestones, derive_phases
    from .scheduling import cpm, fast_schedule

    done_s, run_s = frozenset(done), frozenset(running) - frozenset(done)
    kept = done_s | run_s
    now_h = max(0.0, hours_since_start(plan, now_ms))
    unit = config.time_unit_hours
    remaining = [st for st in plan.tasks if st.task.task_id not in kept]
    new_times: dict[str, ScheduledTask] = {}
    critical_path: tuple[str, ...] = ()
    if remaining:
        left = {st.task.task_id for st in remaining} | run_s

        def stand_in(st: ScheduledTask):
            r = max(unit, st.finish_hours - now_h)
            return dataclasses.replace(st.task, estimate=Estimate(r, r, r), depends_on=())

        def schedule(with_running: bool, base: float):
            tasks = [stand_in(st) for st in plan.tasks if with_running and st.task.task_id in run_s]
            tasks += [dataclasses.replace(st.task, depends_on=tuple(d for d in st.task.depends_on
                                                                   if d in left and (with_running or d not in run_s)))
                      for st in remaining]
            problem = build_problem(goal, tasks, capacities, config)
            return tasks, problem, fast_schedule(problem.project, iterations=FAST_ITERATIONS, seed=0), base

        tasks, problem, sched, base = schedule(True, now_h)
        if any(sched.starts[i] != 0 for i, t in enumerate(tasks) if t.task_id in run_s):
            after = max([now_h] + [max(plan.task(t).finish_hours, now_h + unit) for t in run_s])
            tasks, problem, sched, base = schedule(False, after)
        cp = cpm(problem.exact)
        u, xu = problem.unit_hours, problem.exact_unit_hours
        for i, t in enumerate(tasks):
            if t.task_id in run_s:
                continue
            start = base + sched.starts[i] * u
            new_times[t.task_id] = ScheduledTask(
                task=plan.task(t.task_id).task, start_hours=start, finish_hours=start + problem.exact.durations[i] * xu,
                earliest_start_hours=base + cp.es[i] * xu, latest_start_hours=base + cp.ls[i] * xu,
                slack_hours=cp.slack[i] * xu, critical=cp.slack[i] == 0)
        critical_path = tuple(tasks[i].task_id for i in cp.critical_path)
    all_tasks = tuple(new_times.get(st.task.task_id, st) for st in plan.tasks)
    makespan = max((st.finish_hours for st in all_tasks), default=0.0)
    progress = dict(progress) if progress is not None else {t: 1.0 for t in done_s}
    risks = risk.assess(goal, all_tasks, makespan, critical_path or plan.critical_path,
                        capacities=capacities, cost_total=plan.cost.total, config=config, progress=progress)
    phases = derive_phases(all_tasks)
    new = approval.new_version(
        plan, reason=f"replanned: {reason}", tasks=all_tasks, critical_path=critical_path or plan.critical_path,
        makespan_hours=makespan, phases=phases, milestones=derive_milestones(all_tasks, makespan, phases),
        risks=risks)
    # validate what will happen: completed tasks ended by now at the latest (their kept
    # planned windows may reach past now, which would read as overlaps that cannot occur)
    view = dataclasses.replace(new, tasks=tuple(
        dataclasses.replace(st, start_hours=min(st.start_hours, now_h), finish_hours=min(st.finish_hours, now_h))
        if st.task.task_id in done_s else st for st in all_tasks))
    violations = validation.validate(goal, view, capacities, config, dependencies_checked=True)
    state = (ApprovalState.APPROVED if plan.approval is ApprovalState.APPROVED
             else approval.decide_state(ApprovalState.PENDING, violations, risks, config))
    return dataclasses.replace(new, violations=violations, approval=state)
