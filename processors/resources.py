"""Resources: how much of each kind a plan may use, and how much a schedule uses at its peak.

One meaning of capacity for the planner, risk assessment and validation, so that a plan
is scheduled, assessed and checked against the same numbers. The live-plans work adds
allocation (capacity held by running plans) here.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

from .config import PlanningConfig
from .model import Goal, ScheduledTask

EPS = 1e-9


def effective_capacities(goal: Goal, reported: Mapping[str, float],
                         config: PlanningConfig) -> dict[str, float]:
    """What a goal's plan may use of each resource kind.

    Reported availability (resources.availability, kind -> units) is the truth; kinds
    nobody reported fall back to `config.default_capacities`. A goal's
    `constraints.capacities` can only cap a kind, never raise it (for a kind with no
    capacity at all, the goal's value is the only limit there is). Finally
    `config.resource_buffer_percentage` is held back from each.
    """
    caps = {k: float(v) for k, v in config.default_capacities.items()}
    caps.update((k, float(v)) for k, v in reported.items())
    for kind, limit in goal.constraints.capacities.items():
        caps[kind] = min(caps[kind], float(limit)) if kind in caps else float(limit)
    keep = 1.0 - config.resource_buffer_percentage
    return {k: v * keep for k, v in caps.items()}


class PeakUsage(NamedTuple):
    """Peak demand per resource kind, when each peak starts, most tasks running at once."""

    peak: dict[str, float]
    when: dict[str, float]
    running: int


def peak_usage(tasks: Sequence[ScheduledTask]) -> PeakUsage:
    """Sweep the tasks' start and finish events (cost: tasks, not hours)."""
    events: list[tuple[float, int, int]] = []  # (time, +1 start / -1 finish, index)
    append = events.append
    for i, st in enumerate(tasks):
        if st.finish_hours > st.start_hours + EPS:
            append((st.start_hours, 1, i))
            append((st.finish_hours, -1, i))
    # finishes before starts at the same instant; equal (time, kind) keep task order
    events.sort()
    usage: dict[str, float] = {}
    peak: dict[str, float] = {}
    when: dict[str, float] = {}
    running = max_running = 0
    get = usage.get
    for t, kind, i in events:
        running += kind
        if running > max_running:
            max_running = running
        for k, v in tasks[i].task.resources.items():
            u = get(k, 0.0) + kind * v
            usage[k] = u
            if kind > 0 and u > peak.get(k, 0.0) + EPS:
                peak[k] = u
                when[k] = t
    return PeakUsage(peak, when, max_running)
