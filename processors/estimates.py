"""Learned estimates in planning: which replace the template's, and the risks they raise.

Why a separate rule: a learned model is only worth trusting where it is sure. A task's
learned duration (the median, with its 10/90% quantiles as optimistic/pessimistic)
replaces the template's only when the 80% interval is narrow relative to the median
(`learned_interval_ratio`); every learned failure probability at or above
`learned_failure_threshold` becomes a TECHNICAL risk, confident or not. Pure: the
estimates arrive on the goal (`Goal.estimates`), attached by the planner's client.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

from processors.config import PlanningConfig
from processors.model import Estimate, LearnedEstimate, Risk, RiskCategory, ScheduledTask, Task

MIN_HOURS = 0.05


def usable(e: LearnedEstimate) -> bool:
    return all(math.isfinite(x) for x in (e.low, e.median, e.high, e.failure_p)) and \
        0 < e.low <= e.median <= e.high and 0.0 <= e.failure_p <= 1.0


def confident(e: LearnedEstimate, config: PlanningConfig) -> bool:
    """The interval is narrow enough for the learned duration to replace the template's."""
    return usable(e) and (e.high - e.low) / e.median <= config.learned_interval_ratio


def by_task(estimates: Iterable[LearnedEstimate]) -> dict[str, LearnedEstimate]:
    return {e.task_id: e for e in estimates}


def apply(tasks: Sequence[Task], estimates: Iterable[LearnedEstimate], config: PlanningConfig
          ) -> tuple[tuple[Task, ...], int]:
    """The tasks with confident learned durations in place of the template's, and how many."""
    known = by_task(estimates)
    out, replaced = [], 0
    for t in tasks:
        e = known.get(t.task_id)
        if e is not None and confident(e, config):
            out.append(dataclasses.replace(t, estimate=Estimate(max(e.low, MIN_HOURS), max(e.median, MIN_HOURS),
                                                                max(e.high, MIN_HOURS))))
            replaced += 1
        else:
            out.append(t)
    return tuple(out), replaced


def failure_risks(tasks: Sequence[ScheduledTask], estimates: Iterable[LearnedEstimate],
                  config: PlanningConfig) -> list[Risk]:
    """One TECHNICAL risk for the open tasks the estimator expects to fail: probability = the
    chance that at least one of them fails; impact higher when they are on the critical path."""
    from processors.risk import make_risk   # risk imports this module's caller; keep the cycle lazy
    known = by_task(estimates)
    risky = [(st, known[st.task.task_id].failure_p) for st in tasks
             if st.task.task_id in known and usable(known[st.task.task_id])
             and known[st.task.task_id].failure_p >= config.learned_failure_threshold]
    if not risky:
        return []
    p_none = 1.0
    for _, p in risky:
        p_none *= 1.0 - p
    crit = sum(1 for st, _ in risky if st.critical)
    return [make_risk(RiskCategory.TECHNICAL, "learned-failure", "Tasks the estimator expects to fail",
                      1.0 - p_none, 0.4 + 0.4 * crit / len(risky),
                      mitigations=["Add a review or a spike before the likeliest failures",
                                   "Give these tasks a more reliable executor"],
                      task_ids=[st.task.task_id for st, _ in risky],
                      description=f"{len(risky)} tasks with a learned failure probability >= "
                                  f"{config.learned_failure_threshold:g} (highest {max(p for _, p in risky):.2f}); "
                                  f"{crit} on the critical path")]


def source(replaced: int, model: str) -> str:
    """The plan's estimates_source given how many tasks took learned durations."""
    return model if replaced and model else "heuristic"


