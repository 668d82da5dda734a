"""The planner's estimator client: a goal's tasks -> learned estimates, or the fallback.

Why: template durations are guesses; the estimator (triton_models/estimator) learned from
the pipeline's own history. One request per goal carries all its tasks; the domain decides
which estimates to use (processors/estimates.py). `estimates_source` says what happened:
"<model>/<version>" when it answered, "heuristic:fallback" when it did not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from prometheus_client import Counter

from inference import features as F
from inference.base import TritonModelClient
from processors import decomposition, estimates as domain
from processors.config import PlanningConfig
from processors.model import Goal, LearnedEstimate, Task

FALLBACK = "heuristic:fallback"
PLANS = Counter("layer2_plans_estimates_total", "First plans by where their durations came from "
                "(learned, heuristic: the estimator was not confident, fallback: it did not answer)", ["source"])


def count_plan(source: str | None) -> None:
    PLANS.labels("fallback" if source == FALLBACK else "heuristic" if source in (None, "heuristic")
                 else "learned").inc()


def task_features(goal: Goal, t: Task) -> F.TaskFeatures:
    return F.TaskFeatures(name=t.name, kind=t.phase or "execution", domain=goal.domain,
                          template_hours=t.estimate.most_likely, optimistic=t.estimate.optimistic,
                          pessimistic=t.estimate.pessimistic, resources=dict(t.resources),
                          executor=t.capabilities[0] if t.capabilities else "", n_deps=len(t.depends_on),
                          description=t.description)


@dataclass(frozen=True)
class Estimates:
    estimates: tuple[LearnedEstimate, ...]
    source: str            # the plan's estimates_source if any estimate is confident


class EstimatorClient(TritonModelClient[F.TaskFeatures, tuple[float, float, float, float]]):
    model = "estimator"

    def inputs(self, items):
        import tritonclient.grpc.aio as aio
        texts, feats = F.batch(list(items))
        t = aio.InferInput("TEXT", [len(texts), 1], "BYTES")
        t.set_data_from_numpy(np.array([[s.encode()] for s in texts], dtype=object))
        f = aio.InferInput("FEATURES", list(feats.shape), "FP32")
        f.set_data_from_numpy(feats)
        return [t, f]

    def outputs(self, items, result):
        d, p = result.as_numpy("DURATION"), result.as_numpy("FAILURE_P")
        if d is None or p is None or d.shape != (len(items), 3) or p.shape[0] != len(items):
            raise ValueError(f"estimator answered shapes {getattr(d, 'shape', None)}, {getattr(p, 'shape', None)}"
                             f" for {len(items)} tasks")
        return [(float(a), float(b), float(c), float(q)) for (a, b, c), q in zip(d, p.reshape(-1))]

    async def estimate(self, tasks: Sequence[tuple[str, F.TaskFeatures]]) -> tuple[LearnedEstimate, ...] | None:
        """(task id, features) pairs -> estimates in the same order, or None (fall back)."""
        got = await self.call([f for _, f in tasks])
        if got is None:
            return None
        rows, self.version = got
        return tuple(LearnedEstimate(tid, lo, med, hi, p) for (tid, _), (lo, med, hi, p) in zip(tasks, rows))

    async def for_goal(self, goal: Goal, config: PlanningConfig) -> Estimates | None:
        """Estimates for the tasks decomposition gives `goal`, with the plan's source; None when
        the goal is not the estimator's business (explicit tasks: the author's durations stand)."""
        if goal.tasks:
            return None
        try:
            tasks = decomposition.decompose(goal, max_task_hours=config.default_task_timeout_hours).tasks
        except Exception:
            return None            # the planner reports the goal's problem itself
        got = await self.estimate([(t.task_id, task_features(goal, t)) for t in tasks])
        if got is None:
            return Estimates((), FALLBACK)
        confident = sum(1 for e in got if domain.confident(e, config))
        return Estimates(got, domain.source(confident, f"{self.model}/{self.version}"))
