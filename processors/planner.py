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

from processors import approval, risk, validation
from processors.config import PlanningConfig
from processors.decomposition import decompose
from processors.dependencies import check_dependencies, check_specs
from processors.ids import plan_id as derive_plan_id
from processors.model import (Cost, Goal, Milestone, Phase, Plan, PlanningError, ScheduledTask, Task)
from processors.scheduling import Project, Schedule, cpm, fast_schedule
from processors.scheduling.cpsat import refine

SLOTS = "slots"  # pseudo-resource: how many tasks may run at once
FAST_ITERATIONS = 8  # planner's fast path: a few biased samples + forward-backward


@dataclasses.dataclass(frozen=True)
class Problem:
    """A goal's tasks as an integer RCPSP instance, and how to map it back to hours."""

    tasks: tuple[Task, ...]
    project: Project
    kinds: tuple[str, ...]
    unit_hours: float
    capacities: dict[str, float]


def effective_capacities(goal: Goal, known: Mapping[str, float], config: PlanningConfig) -> dict[str, float]:
    """Goal constraints win over what resources.availability reported, then config defaults;
    resource_buffer_percentage is held back from each."""
    caps = dict(config.default_capacities)
    caps.update(known)
    caps.update(goal.constraints.capacities)
    keep = 1.0 - config.resource_buffer_percentage
    return {k: v * keep for k, v in caps.items()}


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
    project = Project(durations=durations, successors=tuple(tuple(s) for s in successors),
                      demands=tuple(demands), capacities=tuple(caps))
    return Problem(tuple(tasks), project, kinds + (SLOTS,), unit, dict(capacities))


def _tasks_for(goal: Goal, config: PlanningConfig) -> tuple[str, tuple[Task, ...]]:
    if goal.tasks:
        check_specs(goal.tasks)
    decomposition = decompose(goal, max_task_hours=config.default_task_timeout_hours)
    return decomposition.strategy, check_dependencies(decomposition.tasks)


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
    warm = Schedule(starts=tuple(round(st.start_hours / problem.unit_hours) for st in plan.tasks),
                    makespan=round(plan.makespan_hours / problem.unit_hours), method=plan.schedule_method)
    better = refine(problem.project, warm, budget_s=budget, workers=config.refine_workers)
    if better.makespan >= warm.makespan:
        return None
    return assemble(goal, problem, better, config, strategy=plan.strategy, version=plan.version + 1,
                    reason=f"refined: makespan {plan.makespan_hours:g}h -> {better.makespan * problem.unit_hours:g}h")


def assemble(goal: Goal, problem: Problem, schedule: Schedule, config: PlanningConfig, *,
             strategy: str, version: int, reason: str) -> Plan:
    """Turn an integer schedule into a Plan with CPM figures, phases, risks, cost, approval."""
    unit = problem.unit_hours
    cp = cpm(problem.project)
    scheduled = []
    for i, t in enumerate(problem.tasks):
        start = schedule.starts[i] * unit
        scheduled.append(ScheduledTask(
            task=t, start_hours=start, finish_hours=start + problem.project.durations[i] * unit,
            earliest_start_hours=cp.es[i] * unit, latest_start_hours=cp.ls[i] * unit,
            slack_hours=cp.slack[i] * unit, critical=cp.slack[i] == 0))
    scheduled_t = tuple(scheduled)
    critical_path = tuple(problem.tasks[i].task_id for i in cp.critical_path)
    makespan = schedule.makespan * unit
    cost = estimate_cost(problem.tasks, config)
    plan = Plan(
        plan_id=derive_plan_id(goal.goal_id), goal_id=goal.goal_id, version=version, strategy=strategy,
        tasks=scheduled_t, critical_path=critical_path, makespan_hours=makespan,
        phases=derive_phases(scheduled_t), milestones=derive_milestones(scheduled_t, makespan),
        cost=cost, schedule_method=schedule.method,
        lower_bound_hours=max(schedule.lower_bound, cp.makespan) * unit, reason=reason,
        created_at_ms=goal.created_at_ms)
    risks = risk.assess(goal, scheduled_t, makespan, critical_path, capacities=problem.capacities,
                        cost_total=cost.total, config=config)
    plan = dataclasses.replace(plan, risks=risks)
    violations = validation.validate(goal, plan, problem.capacities, config)
    plan = dataclasses.replace(plan, violations=violations)
    return dataclasses.replace(plan, approval=approval.decide(plan, config))


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


def derive_milestones(tasks: Sequence[ScheduledTask], makespan: float) -> tuple[Milestone, ...]:
    out = [Milestone(name=f"{p.name} complete", at_hours=p.finish_hours, task_ids=p.task_ids)
           for p in derive_phases(tasks)]
    last = tuple(st.task.task_id for st in tasks if st.finish_hours == makespan)
    out.append(Milestone(name="plan complete", at_hours=makespan, task_ids=last))
    return tuple(out)


def ready_tasks(plan: Plan, done: set[str] | frozenset[str] = frozenset(),
                already: set[str] | frozenset[str] = frozenset()) -> tuple[ScheduledTask, ...]:
    """Tasks whose predecessors are all done and that were not handed out yet."""
    return tuple(st for st in plan.tasks
                 if st.task.task_id not in done and st.task.task_id not in already
                 and all(d in done for d in st.task.depends_on))
