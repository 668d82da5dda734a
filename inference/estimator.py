"""The planner's estimator client: a goal's tasks -> learned estimates, or the fallback.

Why: template durations are guesses; the estimator (triton_models/estimator) learned from
the pipeline's own history. One request per goal carries all its tasks; the domain decides
which estimates to use (processors/estimates.py). `estimates_source` says what happened:
"<model>/<version>" when it answered, "heuristic:fallback" when it did not.
"""
from __future__ import annotations

import time
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


def estimator_inputs(items) -> list:
    """The estimator's request inputs (TEXT, FEATURES) for TaskFeatures; the grpc and grpc.aio
    clients share the InferInput class, so every caller builds requests here."""
    import tritonclient.grpc as grpcclient
    texts, feats = F.batch(list(items))
    t = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    t.set_data_from_numpy(np.array([[s.encode()] for s in texts], dtype=object))
    f = grpcclient.InferInput("FEATURES", list(feats.shape), "FP32")
    f.set_data_from_numpy(feats)
    return [t, f]


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
    """Also remembers answers for `cache_ttl_s` (0: off): a served version answers the same for
    the same text and features, and template tasks repeat, so most goals need no round trip.
    An answer from another version empties the cache; after a hot load, plans use the old
    version's estimates for at most `cache_ttl_s`."""

    model = "estimator"

    def __init__(self, url: str, *, cache_ttl_s: float = 0.0, cache_size: int = 50_000, **kw) -> None:
        super().__init__(url, **kw)
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self._cache: dict[tuple[str, bytes], tuple[float, tuple[float, float, float, float]]] = {}
        self._cache_version = ""

    def inputs(self, items):
        return estimator_inputs(items)

    def outputs(self, items, result):
        d, p = result.as_numpy("DURATION"), result.as_numpy("FAILURE_P")
        if d is None or p is None or d.shape != (len(items), 3) or p.shape[0] != len(items):
            raise ValueError(f"estimator answered shapes {getattr(d, 'shape', None)}, {getattr(p, 'shape', None)}"
                             f" for {len(items)} tasks")
        return [(float(a), float(b), float(c), float(q)) for (a, b, c), q in zip(d, p.reshape(-1))]

    async def estimate(self, tasks: Sequence[tuple[str, F.TaskFeatures]]) -> tuple[LearnedEstimate, ...] | None:
        """(task id, features) pairs -> estimates in the same order, or None (fall back)."""
        now = time.monotonic()
        keys = [(F.text_of(f), F.vector(f).tobytes()) for _, f in tasks]
        rows: list = [None] * len(tasks)
        if self.cache_ttl_s > 0:
            for i, k in enumerate(keys):
                hit = self._cache.get(k)
                if hit is not None and now - hit[0] < self.cache_ttl_s:
                    rows[i] = hit[1]
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            got = await self.call([tasks[i][1] for i in missing])
            if got is None:
                return None
            fresh, version = got
            if self.cache_ttl_s > 0:
                if version != self._cache_version or len(self._cache) + len(missing) > self.cache_size:
                    self._cache.clear()
                    self._cache_version = version
                    rows = [None] * len(tasks)         # a new version answers every task of this goal
                    if len(missing) < len(tasks):
                        return await self.estimate(tasks)
                for i, r in zip(missing, fresh):
                    self._cache[keys[i]] = (now, r)
            for i, r in zip(missing, fresh):
                rows[i] = r
            self.version = version
        else:
            self.version = self._cache_version
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
