"""Limits declared once and checked at the door, so no record however large or strange
can stall or break the planner behind it.

Each check raises PlanningError with a precise reason (the DLQ header): too_large,
too_many_tasks, text_too_long, duration_out_of_range, horizon_out_of_range,
value_out_of_range, not_finite. Pure: numbers in, errors out.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .model import Goal, PlanningError


@dataclass(frozen=True)
class Limits:
    """The `[limits]` table of chimera.toml (LIMITS_<KEY> env vars override)."""

    max_record_bytes: int = 256 * 1024       # one input record, as received
    max_state_bytes: int = 512 * 1024        # one plan's stored state (the producer allows 1 MiB)
    max_tasks_per_goal: int = 500
    max_dependencies_per_task: int = 100
    max_list_items: int = 100                # objectives, success criteria, capabilities, ...
    max_id_chars: int = 200                  # goal, task and resource ids
    max_title_chars: int = 500               # goal title, task name
    max_text_chars: int = 10_000             # goal description, feedback message
    max_task_hours: float = 100_000.0        # one task (about 11 years)
    max_horizon_hours: float = 1_000_000.0   # the sum of a goal's task durations
    max_capacity: float = 1_000_000.0        # units of one resource kind
    max_budget: float = 1e12
    max_parallelism: int = 10_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"limits.{f.name} must be a positive number, got {value!r}")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], env: Mapping[str, str] | None = None) -> "Limits":
        """Build from the `[limits]` table, then LIMITS_<KEY> environment overrides."""
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in dict(d).items():
            if key not in kinds:
                raise ValueError(f"unknown limits key: {key!r}")
            values[key] = value
        for key in kinds:
            var = f"LIMITS_{key.upper()}"
            if env and var in env:
                values[key] = env[var]
        out = {}
        for key, value in values.items():
            cast = int if kinds[key] in ("int", int) else float
            try:
                if isinstance(value, bool):
                    raise ValueError
                out[key] = cast(value)
            except (TypeError, ValueError):
                raise ValueError(f"limits.{key} must be a number, got {value!r}") from None
        return cls(**out)


def finite(value: float | None, what: str, *, low: float = 0.0, high: float = math.inf) -> None:
    """Reject NaN, infinities and numbers outside [low, high]."""
    if value is None:
        return
    if not math.isfinite(value):
        raise PlanningError("not_finite", f"{what} is {value}")
    if not low <= value <= high:
        raise PlanningError("value_out_of_range", f"{what} = {value:g} is outside [{low:g}, {high:g}]")


def record_size(size: int, limits: Limits) -> None:
    if size > limits.max_record_bytes:
        raise PlanningError("too_large", f"record of {size} bytes exceeds max_record_bytes={limits.max_record_bytes}")


def state_size(size: int, plan_id: str, limits: Limits) -> None:
    if size > limits.max_state_bytes:
        raise PlanningError("too_large", f"plan {plan_id}: state of {size} bytes exceeds "
                                         f"max_state_bytes={limits.max_state_bytes}")


def _text(value: str, what: str, most: int) -> None:
    if len(value) > most:
        raise PlanningError("text_too_long", f"{what} has {len(value)} characters, the limit is {most}")


def _items(values: Iterable[str], what: str, most: int, each: int) -> None:
    values = tuple(values)
    if len(values) > most:
        raise PlanningError("too_many_items", f"{what} has {len(values)} items, the limit is {most}")
    for v in values:
        _text(v, f"an item of {what}", each)


def capacities(caps: Mapping[str, float], what: str, limits: Limits) -> None:
    for kind, units in caps.items():
        _text(kind, f"{what} kind", limits.max_id_chars)
        finite(units, f"{what}[{kind}]", high=limits.max_capacity)


def resource(record: Mapping, limits: Limits) -> None:
    """A resources.availability record: its ids, capabilities and numbers within the limits.
    Every worker keeps every resource in memory and copies capabilities into allocations, so
    a resource with a million capabilities or a megabyte id must not get in."""
    _text(record["resource_id"], "resource_id", limits.max_id_chars)
    _text(record.get("kind") or "", "kind", limits.max_id_chars)
    _items(record.get("capabilities") or (), "capabilities", limits.max_list_items, limits.max_id_chars)
    capacities(record["capacities"], "capacities", limits)
    capacities(record.get("free") or {}, "free", limits)
    finite(record.get("hourly_rate"), "hourly_rate", high=limits.max_budget)


def check_goal(goal: Goal, limits: Limits) -> None:
    """Every size and number of a goal within the declared limits."""
    _text(goal.goal_id, "goal_id", limits.max_id_chars)
    _text(goal.title, "title", limits.max_title_chars)
    _text(goal.description, "description", limits.max_text_chars)
    _text(goal.domain, "domain", limits.max_id_chars)
    _text(goal.submitted_by, "submitted_by", limits.max_id_chars)
    _text(goal.strategy or "", "strategy", limits.max_id_chars)
    _items(goal.objectives, "objectives", limits.max_list_items, limits.max_title_chars)
    _items(goal.success_criteria, "success_criteria", limits.max_list_items, limits.max_title_chars)
    c = goal.constraints
    finite(c.budget, "budget", high=limits.max_budget)
    finite(c.deadline_hours, "deadline", low=-math.inf)
    if c.max_parallelism is not None and c.max_parallelism > limits.max_parallelism:
        raise PlanningError("value_out_of_range", f"max_parallelism = {c.max_parallelism} exceeds {limits.max_parallelism}")
    capacities(c.capacities, "constraints.capacities", limits)
    _items(c.required_capabilities, "required_capabilities", limits.max_list_items, limits.max_id_chars)
    if len(goal.tasks) > limits.max_tasks_per_goal:
        raise PlanningError("too_many_tasks", f"{len(goal.tasks)} tasks, the limit is {limits.max_tasks_per_goal}")
    total = 0.0
    for t in goal.tasks:
        _text(t.task_id, "task_id", limits.max_id_chars)
        _text(t.name, f"task {t.task_id!r} name", limits.max_title_chars)
        if not math.isfinite(t.duration_hours):
            raise PlanningError("not_finite", f"task {t.task_id!r} duration is {t.duration_hours}")
        if t.duration_hours > limits.max_task_hours:
            raise PlanningError("duration_out_of_range", f"task {t.task_id!r} lasts {t.duration_hours:g} h, "
                                                         f"the limit is {limits.max_task_hours:g} h")
        total += max(t.duration_hours, 0.0)
        _items(t.depends_on, f"task {t.task_id!r} depends_on", limits.max_dependencies_per_task, limits.max_id_chars)
        _items(t.capabilities, f"task {t.task_id!r} capabilities", limits.max_list_items, limits.max_id_chars)
        capacities(t.resources, f"task {t.task_id!r} resources", limits)
    if total > limits.max_horizon_hours:
        raise PlanningError("horizon_out_of_range", f"tasks add up to {total:g} h, the limit is "
                                                    f"{limits.max_horizon_hours:g} h")
