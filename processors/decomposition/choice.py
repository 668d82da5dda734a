"""Choosing a decomposition strategy: the names come from the one registry
(strategies.BUILDERS), aliases map people's words onto them, and a few rules pick one."""
from __future__ import annotations

from ..model import Goal, PlanningError, Priority
from .select import goal_text, matched_risks, scarce_resources, select_units
from .strategies import BUILDERS
from .templates import DomainTemplate

STRATEGIES: tuple[str, ...] = tuple(BUILDERS)
EXPLICIT = "explicit"

LARGE_OBJECTIVES = 5      # this many objectives or more -> hybrid
LARGE_COMPONENTS = 6      # this many selected components or more -> hybrid
ALIASES = {"resource-based": "resource", "resource_based": "resource", "risk-based": "risk",
           "risk_based": "risk", "component": "hierarchical", "phase": "temporal", "phased": "temporal"}


def validate_strategy(strategy: str) -> str:
    s = (strategy or "").strip().lower()
    s = ALIASES.get(s, s)
    if s not in STRATEGIES:
        raise PlanningError("unknown_strategy",
                            f"{strategy!r} is not one of {', '.join(STRATEGIES)}")
    return s


def choose(goal: Goal, tpl: DomainTemplate) -> str:
    """The strategy for a goal (rules, first match wins):

    1. explicit tasks -> "explicit"; a forced `goal.strategy` -> that strategy;
    2. large goals (>= 5 objectives or >= 6 selected components) -> "hybrid";
    3. a resource the goal caps below twice the largest single demand -> "resource";
    4. CRITICAL priority, or >= 2 keyword-matched template risks -> "risk";
    5. a deadline -> "temporal" (phase-gated, easy to track against the date);
    6. otherwise the domain's preferred strategy.
    """
    if goal.tasks:
        return EXPLICIT
    if goal.strategy:
        return validate_strategy(goal.strategy)
    text = goal_text(goal)
    components = select_units(tpl.components, text, limit=len(tpl.components))
    if len(goal.objectives) >= LARGE_OBJECTIVES or len(components) >= LARGE_COMPONENTS:
        return "hybrid"
    if scarce_resources(goal, components):
        return "resource"
    mentioned = [r for r, h in matched_risks(goal, tpl) if h > 0]
    if goal.priority == Priority.CRITICAL or len(mentioned) >= 2:
        return "risk"
    if goal.constraints.deadline_hours is not None:
        return "temporal"
    pref = tpl.preferred_strategy
    return pref if pref in STRATEGIES else "hierarchical"
