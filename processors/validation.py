"""Plan validation: human-readable findings for a scheduled plan (empty tuple = valid)."""
from __future__ import annotations

from typing import Mapping

from .config import PlanningConfig
from .dependencies import check_dependencies
from .model import RESOURCE_KINDS, Goal, Plan, PlanningError
from .resources import EPS, PeakUsage, peak_usage


def _h(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") + " h"


def validate(goal: Goal, plan: Plan, capacities: Mapping[str, float], config: PlanningConfig, *,
             usage: PeakUsage | None = None,
             dependencies_checked: bool = False) -> tuple[str, ...]:
    """Findings: dependency errors, precedence, deadline, budget, capacity (per task and
    at the schedule's peak), parallelism and planning horizon. `capacities` is what the
    plan may use, `resources.effective_capacities(goal, reported, config)` (the planner's
    `Problem.capacities`).

    The planner passes what it already computed: `usage` = `peak_usage(plan.tasks)`,
    and `dependencies_checked=True` when the plan's tasks went through
    `check_dependencies` (the planner's tasks always have)."""
    out: list[str] = []
    deps_ok = True
    if not dependencies_checked:
        try:
            check_dependencies([st.task for st in plan.tasks])
        except PlanningError as e:
            out.append(f"{e.reason}: {e.detail}" if e.detail else e.reason)
            deps_ok = False

    by_id = {st.task.task_id: st for st in plan.tasks}
    if deps_ok:
        for st in plan.tasks:
            if st.start_hours < -EPS:
                out.append(f"task {st.task.task_id} starts before the plan ({_h(st.start_hours)})")
            if st.finish_hours < st.start_hours - EPS:
                out.append(f"task {st.task.task_id} finishes before it starts")
            for d in st.task.depends_on:
                pred = by_id[d]
                if st.start_hours < pred.finish_hours - EPS:
                    out.append(f"task {st.task.task_id} starts at {_h(st.start_hours)} before its "
                               f"dependency {d} finishes at {_h(pred.finish_hours)}")
    missing_cp = [t for t in plan.critical_path if t not in by_id]
    if missing_cp:
        out.append(f"critical path names unknown tasks: {', '.join(missing_cp)}")

    c = goal.constraints
    if c.deadline_hours is not None and plan.makespan_hours > c.deadline_hours + EPS:
        out.append(f"deadline exceeded: makespan {_h(plan.makespan_hours)} > deadline {_h(c.deadline_hours)} "
                   f"(over by {_h(plan.makespan_hours - c.deadline_hours)})")
    if c.budget is not None and plan.cost.total > c.budget + EPS:
        out.append(f"budget exceeded: cost {plan.cost.total:.2f} {plan.cost.currency} > budget "
                   f"{c.budget:.2f} (over by {plan.cost.total - c.budget:.2f})")

    caps = capacities
    oversized: set[str] = set()  # kinds some single task already exceeds
    for st in plan.tasks:
        for kind, need in sorted(st.task.resources.items()):
            cap = caps.get(kind)
            if cap is not None and need > cap + EPS:
                oversized.add(kind)
                out.append(f"capacity exceeded: task {st.task.task_id} needs {need:g} {kind} "
                           f"but capacity is {cap:g}")
    peak, when, running = usage if usage is not None else peak_usage(plan.tasks)
    for kind in (*RESOURCE_KINDS, *sorted(k for k in peak if k not in RESOURCE_KINDS)):
        cap = caps.get(kind)
        if cap is not None and kind not in oversized and peak.get(kind, 0.0) > cap + EPS:
            out.append(f"capacity exceeded: peak {kind} usage {peak[kind]:g} > capacity {cap:g} "
                       f"at {_h(when[kind])}")

    limits = [(config.max_concurrent_tasks, "max_concurrent_tasks")]
    if c.max_parallelism is not None:
        limits.append((c.max_parallelism, "goal max_parallelism"))
    limit, name = min(limits)
    if running > limit:
        out.append(f"max parallelism exceeded: {running} tasks run at once > {name} {limit}")

    horizon = config.planning_horizon_days * 24.0
    if plan.makespan_hours > horizon + EPS:
        out.append(f"horizon exceeded: makespan {_h(plan.makespan_hours)} is beyond the planning horizon "
                   f"of {config.planning_horizon_days} days ({_h(horizon)})")
    return tuple(out)
