"""Task decomposition: Goal -> tasks, by one of six strategies, from domain templates.

    decompose(goal)                    # strategy chosen from domain, size, constraints
    decompose(goal, "risk")            # forced (also via goal.strategy)
    choose_strategy(goal)

Deterministic: no randomness and no clock; the same goal gives identical tasks. Domain
knowledge lives in processors/templates/*.toml (see templates.py for the format); tests
and callers can pass their own `template=` parsed with `parse_template(text)`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dependencies import check_dependencies, check_specs
from ..model import Goal, PlanningError, Task
from .choice import EXPLICIT, STRATEGIES, choose, validate_strategy
from .strategies import BUILDERS, Options, explicit
from .templates import (BUILTIN_DOMAINS, DomainTemplate, TemplateError, builtin_template,
                        parse_template, resolve_domain, template_from_dict)

__all__ = [
    "Decomposition", "STRATEGIES", "EXPLICIT", "choose_strategy", "decompose", "template_for",
    "DomainTemplate", "TemplateError", "parse_template", "template_from_dict", "builtin_template",
    "BUILTIN_DOMAINS",
]


@dataclass(frozen=True)
class Decomposition:
    strategy: str              # the strategy actually used ("explicit" for goal.tasks)
    tasks: tuple[Task, ...]    # in a topological order
    domain: str = ""           # the template used ("" for explicit tasks)


def template_for(goal: Goal) -> DomainTemplate:
    """The packaged template for the goal's domain (generic when unknown)."""
    return resolve_domain(goal.domain)


def choose_strategy(goal: Goal, template: DomainTemplate | None = None) -> str:
    """"explicit" when the goal lists tasks, else one of STRATEGIES (see choice.choose)."""
    return choose(goal, template or template_for(goal))


def decompose(goal: Goal, strategy: str | None = None, *, template: DomainTemplate | None = None,
              max_task_hours: float = 8.0) -> Decomposition:
    """Break a goal into tasks.

    `strategy` (or `goal.strategy`) forces one of STRATEGIES; a bad name raises
    PlanningError("unknown_strategy"). Explicit `goal.tasks` always win: they are checked
    (check_specs) and converted without decomposition (strategy "explicit").
    `max_task_hours` (pass the config's default_task_timeout_hours) bounds task length in
    the resource and hybrid strategies.
    """
    if strategy is not None and strategy != EXPLICIT:
        strategy = validate_strategy(strategy)
    if goal.tasks:
        # check_specs validates ids, references, durations and resources and returns the
        # specs in topological order: the converted tasks need no second check.
        return Decomposition(EXPLICIT, explicit(check_specs(goal.tasks), goal))
    if strategy == EXPLICIT:
        raise PlanningError("unknown_strategy", "strategy 'explicit' needs goal.tasks")
    tpl = template or template_for(goal)
    if strategy is None:
        strategy = choose(goal, tpl)
    tasks = BUILDERS[strategy](goal, tpl, Options(max_task_hours=max_task_hours))
    if not tasks:
        raise PlanningError("empty_decomposition", f"strategy {strategy!r} produced no tasks")
    return Decomposition(strategy, check_dependencies(tasks), tpl.name)
