"""Episodic memory reuse: plan a goal from a similar past goal that succeeded.

Pure domain code: the look-up itself (Chroma, off the event loop, with a timeout) happens
in streams/; this module gets what was found (an `Episode`: the past plan's decomposition
with each task's planned and, where reported, actual hours) and decides whether and how to
reuse it. `reuse(goal, episode, policy)` returns the goal to plan instead: the original goal
with the episode's tasks as explicit tasks whose durations are corrected by what actually
happened, and the `MemoryUse` the plan records; or None (plan as usual).

Correction of a task's duration, in order:
  - the task's own observed actual hours, when the episode reported them;
  - else its planned hours x the episode's overall factor (sum of actual / sum of planned
    hours over the tasks that reported actuals);
  - else (nothing observed) the planned hours.
Every correction is clamped to [min_factor, max_factor] x planned and to max_task_hours,
so one absurd report cannot blow up a plan.

Planning stays deterministic given the episode: the goal to plan carries the corrected
tasks, so the refiner (which re-plans from the goal it is sent) rebuilds the same plan.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping

from .dependencies import check_specs
from .model import Goal, MemoryUse, PlanningError, TaskSpec

STRATEGY = "memory"  # the plan's strategy when it reused an episode


@dataclass(frozen=True)
class EpisodeTask:
    task_id: str
    name: str
    planned_hours: float
    depends_on: tuple[str, ...] = ()
    actual_hours: float | None = None        # observed (COMPLETED feedback), when reported
    resources: Mapping[str, float] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Episode:
    """A past goal, what was planned for it and what happened."""

    goal_id: str
    similarity: float                        # to the goal being planned, 0..1 (cosine)
    tasks: tuple[EpisodeTask, ...]
    outcome: str = "COMPLETED"


@dataclass(frozen=True)
class ReusePolicy:
    threshold: float = 0.8                   # least similarity to reuse an episode
    min_factor: float = 0.25                 # corrections stay within [min, max] x planned
    max_factor: float = 4.0
    max_task_hours: float = 100_000.0


@dataclass(frozen=True)
class Reuse:
    goal: Goal                               # the goal to plan: the episode's tasks, corrected
    use: MemoryUse


def duration_factor(episode: Episode) -> float | None:
    """Actual / planned hours over the tasks that reported actuals (None when none did)."""
    seen = [t for t in episode.tasks if t.actual_hours is not None and t.actual_hours >= 0]
    planned = sum(t.planned_hours for t in seen)
    if not seen or planned <= 0:
        return None
    return sum(t.actual_hours for t in seen) / planned  # type: ignore[misc]


def corrected_hours(task: EpisodeTask, factor: float | None, policy: ReusePolicy) -> float:
    planned = task.planned_hours
    if task.actual_hours is not None and task.actual_hours >= 0:
        hours = task.actual_hours
    elif factor is not None:
        hours = planned * factor
    else:
        hours = planned
    if planned > 0:
        hours = min(max(hours, planned * policy.min_factor), planned * policy.max_factor)
    return min(max(hours, 0.0), policy.max_task_hours)


def _usable(goal: Goal, episode: Episode | None, policy: ReusePolicy) -> bool:
    if episode is None or goal.tasks or goal.strategy:   # the author's breakdown / strategy wins
        return False
    if episode.outcome != "COMPLETED" or not episode.tasks:
        return False
    if not (math.isfinite(episode.similarity) and episode.similarity >= policy.threshold):
        return False
    return all(math.isfinite(t.planned_hours) and t.planned_hours >= 0
               and (t.actual_hours is None or math.isfinite(t.actual_hours)) for t in episode.tasks)


def reuse(goal: Goal, episode: Episode | None, policy: ReusePolicy = ReusePolicy()) -> Reuse | None:
    """The goal to plan with the episode's decomposition and corrected durations, or None."""
    if not _usable(goal, episode, policy):
        return None
    assert episode is not None
    factor = duration_factor(episode)
    specs = tuple(TaskSpec(task_id=t.task_id, name=t.name, duration_hours=corrected_hours(t, factor, policy),
                           depends_on=tuple(t.depends_on), resources=dict(t.resources),
                           capabilities=tuple(t.capabilities))
                  for t in episode.tasks)
    try:
        check_specs(specs)                     # a stored decomposition that no longer forms a network
    except PlanningError:
        return None
    observed = sum(1 for t in episode.tasks if t.actual_hours is not None and t.actual_hours >= 0)
    use = MemoryUse(source_goal_id=episode.goal_id, similarity=round(episode.similarity, 6),
                    duration_factor=round(factor if factor is not None else 1.0, 6),
                    tasks_reused=len(specs), tasks_observed=observed)
    return Reuse(dataclasses.replace(goal, tasks=specs), use)
