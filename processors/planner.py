"""Goal -> Plan: decomposition, dependency check, schedule, risk, cost, approval.

The fast path (`plan_goal`) answers in milliseconds with a schedule-generation
heuristic; `refine_plan` spends a time budget on CP-SAT warm-started from it and
returns a new plan version only when the makespan got shorter.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Mapping, Sequence

from processors import approval, estimates, risk, validation
from processors.resources import effective_capacities, peak_usage
from processors.config import PlanningConfig
from processors.decomposition import decompose
from processors.ids import plan_id as derive_plan_id
from processors.model import (Cost, Goal, Milestone, Phase, Plan, PlanningError, ScheduledTask, Task)
from processors.scheduling import Project, Schedule, cpm, fast_schedule, refine

SLOTS = "slots"  # pseudo-resource: how many tasks may run at once
# Most time units the scheduler's grid may span (sum of durations): the serial SGS keeps a
# profile with one slot per unit and CP-SAT's domains reach as far, so longer goals are
# scheduled on a coarser grid. Goals of up to ~3 years of quarter hours are not affected.
MAX_TIME_UNITS = 100_000
FAST_ITERATIONS = 1  # fast path: one LFT serial-SGS pass + one forward-backward round.
# bench/planner.py (30-task goals): vs 8 iterations about 2x the plans/s, makespan/LB 1.039 vs
# 1.038 (software), 1.075 vs 1.075 (data_ml), 1.127 vs 1.111 (PSPLIB j30); refine_plan closes the rest.


@dataclasses.dataclass(frozen=True)
class Problem:
    """A goal's tasks as an integer RCPSP instance, and how to map it back to hours.

    `project` is what the scheduler solves, in units of `unit_hours`. `exact` has the
    durations on the grid of `exact_unit_hours` (CPM, lower bound, how long each task
    takes); it is `project` itself unless the grid had to be coarsened (MAX_TIME_UNITS)."""

    tasks: tuple[Task, ...]
    project: Project
    kinds: tuple[str, ...]
    unit_hours: float
    capacities: dict[str, float]
    exact: Project
    exact_unit_hours: float

    @property
    def coarsened(self) -> bool:
        return self.exact is not self.project


def build_problem(goal: Goal, tasks: Sequence[Task], capacities: Mapping[str, float],
                  config: PlanningConfig) -> Problem:
    unit = config.time_unit_hours
    kinds = tuple(sorted({k for t in tasks for k, v in t.resources.items() if v > 0}))
    index = {t.task_id: i for i, t in enumerate(tasks)}
    successors: list[list[int]] = [[] for _ in tasks]
    for i, t in enumerate(tasks):
        for dep in t.depends_on:
            successors[index[dep]].append(i)
    demands = []
    for t in tasks:
        demands.append(tuple(math.ceil(t.resources.get(k, 0.0)) for k in kinds) + (1,))
    caps = []
    for j, k in enumerate(kinds):
        # A task bigger than the capacity still gets scheduled (alone); validation reports it.
        need = max(d[j] for d in demands)
        caps.append(max(int(capacities.get(k, 0.0)), need))
    slots = goal.constraints.max_parallelism or config.max_concurrent_tasks
    caps.append(max(1, slots))
    durations = tuple(max(0, math.ceil(t.duration_hours / unit - 1e-9)) for t in tasks)
    # Coarsest exact grid: when every duration is a multiple of g time units, a schedule on
    # the g-unit grid is the same schedule (serial SGS only ever starts activities at sums
    # of durations, and so do optimal CP-SAT schedules of active form), with g times fewer
    # time points to scan. E.g. whole-hour tasks schedule in hours, not quarter hours.
    g = math.gcd(*durations)
    if g > 1:
        durations = tuple(d // g for d in durations)
        unit *= g
    shape = dict(successors=tuple(tuple(s) for s in successors), demands=tuple(demands),
                 capacities=tuple(caps))
    exact = project = Project(durations=durations, **shape)
    grid = -(-sum(durations) // MAX_TIME_UNITS)
    if grid > 1:
        # Scaled time: `grid` exact units make one scheduling unit, durations rounded up, so
        # the grid spans at most MAX_TIME_UNITS + n units. A schedule on it stays valid with
        # the exact durations (each task's real interval lies inside its rounded one).
        project = Project(durations=tuple(-(-d // grid) for d in durations), **shape)
    return Problem(tuple(tasks), project, kinds + (SLOTS,), unit * grid, dict(capacities), exact, unit)


def _tasks_for(goal: Goal, config: PlanningConfig) -> tuple[str, tuple[Task, ...]]:
    # decompose checks the tasks once (check_specs for explicit tasks, check_dependencies
    # for decomposed ones) and returns them in topological order
    decomposition = decompose(goal, max_task_hours=config.default_task_timeout_hours)
    if goal.estimates:   # learned durations where the estimator is confident (processors/estimates.py)
        return decomposition.strategy, estimates.apply(decomposition.tasks, goal.estimates, config)[0]
    return decomposition.strategy, decomposition.tasks


def plan_goal(goal: Goal, *, known_capacities: Mapping[str, float] | None = None,
              config: PlanningConfig | None = None) -> tuple[Plan, Problem]:
    """The first plan version of a goal (fast path). Raises PlanningError for bad goals."""
    config = config or PlanningConfig()
    if not goal.goal_id or not goal.title:
        raise PlanningError("missing_field", "goal_id and title are required")
    strategy, tasks = _tasks_for(goal, config)
    if not tasks:
        raise PlanningError("empty_plan", "decomposition produced no tasks")
    problem = build_problem(goal, tasks, effective_capacities(goal, known_capacities or {}, config), config)
    schedule = fast_schedule(problem.project, iterations=FAST_ITERATIONS, seed=0)
    plan = assemble(goal, problem, schedule, config, strategy=strategy, version=1, reason="created")
    return plan, problem


def refine_plan(goal: Goal, plan: Plan, problem: Problem, config: PlanningConfig,
                budget_s: float | None = None) -> Plan | None:
    """A new version with a shorter makespan found by CP-SAT, or None."""
    budget = config.refine_budget_seconds if budget_s is None else budget_s
    if budget <= 0:
        return None
    starts = tuple(round(st.start_hours / problem.unit_hours) for st in plan.tasks)
    warm = Schedule(starts=starts, makespan=max(s + d for s, d in zip(starts, problem.project.durations)),
                    method=plan.schedule_method)
    better = refine(problem.project, warm, budget_s=budget, workers=config.refine_workers)
    if better.makespan >= warm.makespan:
        return None
    new = assemble(goal, problem, better, config, strategy=plan.strategy, version=plan.version + 1,
                   reason="refined")
    if new.makespan_hours >= plan.makespan_hours:   # shorter on a coarse grid, not in hours
        return None
    return dataclasses.replace(
        new, reason=f"refined: makespan {plan.makespan_hours:g}h -> {new.makespan_hours:g}h")


def assemble(goal: Goal, problem: Problem, schedule: Schedule, config: PlanningConfig, *,
             strategy: str, version: int, reason: str) -> Plan:
    """Turn an integer schedule into a Plan with CPM figures, phases, risks, cost, approval.

    CPM and the schedule's peak resource usage are computed once here and handed to risk
    assessment and validation; the tasks were checked by decomposition (see _tasks_for)."""
    unit, xu = problem.unit_hours, problem.exact_unit_hours
    cp = cpm(problem.exact)
    es, ls, slack = cp.es, cp.ls, cp.slack
    durations = problem.exact.durations
    starts = schedule.starts
    scheduled_t = tuple([
        ScheduledTask(task=t, start_hours=starts[i] * unit, finish_hours=starts[i] * unit + durations[i] * xu,
                      earliest_start_hours=es[i] * xu, latest_start_hours=ls[i] * xu,
                      slack_hours=slack[i] * xu, critical=slack[i] == 0)
        for i, t in enumerate(problem.tasks)])
    critical_path = tuple(problem.tasks[i].task_id for i in cp.critical_path)
    makespan = max(st.finish_hours for st in scheduled_t)
    # the scheduler's bound is in its own units: on a coarsened grid only the exact one holds
    bound = problem.exact.lower_bound if problem.coarsened else schedule.lower_bound
    cost = estimate_cost(problem.tasks, config)
    phases = derive_phases(scheduled_t)
    usage = peak_usage(scheduled_t)
    risks = risk.assess(goal, scheduled_t, makespan, critical_path, capacities=problem.capacities,
                        cost_total=cost.total, config=config, usage=usage)
    plan = Plan(
        plan_id=derive_plan_id(goal.goal_id), goal_id=goal.goal_id, version=version, strategy=strategy,
        tasks=scheduled_t, critical_path=critical_path, makespan_hours=makespan,
        phases=phases, milestones=derive_milestones(scheduled_t, makespan, phases),
        risks=risks, cost=cost, schedule_method=schedule.method,
        lower_bound_hours=max(bound, cp.makespan) * xu, reason=reason,
        created_at_ms=goal.created_at_ms)
    violations = validation.validate(goal, plan, problem.capacities, config, usage=usage,
                                     dependencies_checked=True)
    return dataclasses.replace(plan, violations=violations,
                               approval=approval.decide_state(plan.approval, violations, risks, config))


def estimate_cost(tasks: Sequence[Task], config: PlanningConfig) -> Cost:
    """Hours x (base rate + sum of resource units x hourly rate)."""
    rates = config.hourly_rates
    by_resource: dict[str, float] = defaultdict(float)
    for t in tasks:
        hours = t.estimate.expected
        by_resource["base"] += hours * rates.get("base", 0.0)
        for kind, units in t.resources.items():
            by_resource[kind] += hours * units * rates.get(kind, 0.0)
    by_resource = {k: round(v, 2) for k, v in sorted(by_resource.items())}
    return Cost(total=round(sum(by_resource.values()), 2), by_resource=by_resource)


def derive_phases(tasks: Sequence[ScheduledTask]) -> tuple[Phase, ...]:
    groups: dict[str, list[ScheduledTask]] = defaultdict(list)
    for st in tasks:
        groups[st.task.phase or "execution"].append(st)
    phases = [Phase(name=name, start_hours=min(s.start_hours for s in sts),
                    finish_hours=max(s.finish_hours for s in sts),
                    task_ids=tuple(s.task.task_id for s in sts)) for name, sts in groups.items()]
    return tuple(sorted(phases, key=lambda p: (p.start_hours, p.finish_hours, p.name)))


def derive_milestones(tasks: Sequence[ScheduledTask], makespan: float,
                      phases: Sequence[Phase] | None = None) -> tuple[Milestone, ...]:
    """One milestone per phase (pass `derive_phases(tasks)` if you have it) and one at the end."""
    out = [Milestone(name=f"{p.name} complete", at_hours=p.finish_hours, task_ids=p.task_ids)
           for p in (derive_phases(tasks) if phases is None else phases)]
    last = tuple(st.task.task_id for st in tasks if st.finish_hours == makespan)
    out.append(Milestone(name="plan complete", at_hours=makespan, task_ids=last))
    return tuple(out)


def ready_tasks(plan: Plan, done: set[str] | frozenset[str] = frozenset(),
                already: set[str] | frozenset[str] = frozenset()) -> tuple[ScheduledTask, ...]:
    """Tasks whose predecessors are all done and that were not handed out yet."""
    return tuple(st for st in plan.tasks
                 if st.task.task_id not in done and st.task.task_id not in already
                 and all(d in done for d in st.task.depends_on))
