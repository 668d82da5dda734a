"""What the estimator learns from: per task, what the planner saw and what really happened.

Two sources, one shape (`Example`): the pipeline's own history in ClickHouse (first plan
versions' tasks joined with their last execution feedback: actual hours, COMPLETED or
FAILED), and a synthetic history with known true durations (per task kind, domain and
executor, with log-normal noise) for tests and the bench. Both build features with
inference.features, exactly as the planner's client does.
"""
from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

from inference import features as F


@dataclass(frozen=True)
class Example:
    goal_id: str
    task: F.TaskFeatures
    actual_hours: float
    failed: bool


def _unit(key: str) -> float:
    return zlib.crc32(key.encode()) / 2**32


def true_factor(kind: str, domain: str, executor: str) -> float:
    """The synthetic world's truth: actual / template hours, 0.45x..2.6x, from three effects."""
    return (0.6 + 1.0 * _unit("k:" + kind)) * (0.75 + 0.6 * _unit("d:" + domain)) * (0.85 + 0.5 * _unit("e:" + executor))


def true_failure(kind: str, executor: str) -> float:
    return 0.02 + 0.45 * _unit(f"f:{kind}:{executor}") ** 2


def synthetic(n_goals: int = 300, *, seed: int = 7, noise: float = 0.25) -> list[Example]:
    """Tasks of sample goals (the planner's own decomposition) with durations drawn from the truth."""
    from inference.estimator import task_features
    from processors.decomposition import decompose
    from streams import codec, samples
    rng = random.Random(seed)
    out: list[Example] = []
    for rec in samples.sample_goals(n_goals, 1_700_000_000_000 + seed, prefix=f"syn{seed}"):
        goal = codec.goal_from_record(rec)
        for t in decompose(goal).tasks:
            f = task_features(goal, t)
            truth = f.template_hours * true_factor(f.kind, f.domain, f.executor)
            actual = truth * math.exp(rng.gauss(0.0, noise))
            out.append(Example(goal.goal_id, f, actual, rng.random() < true_failure(f.kind, f.executor)))
    return out


# the aggregates are not aliased `status`/`actual_hours`: ClickHouse would read the WHERE through them
HISTORY_SQL = """
SELECT t.plan_id, t.task_id, t.name, t.phase, g.domain, t.optimistic_hours, t.most_likely_hours,
       t.pessimistic_hours, t.capabilities, length(t.depends_on), f.outcome, f.hours, p.goal_id
FROM (SELECT * FROM chimera.tasks FINAL WHERE plan_version = 1) AS t
JOIN (SELECT plan_id, goal_id FROM chimera.plans FINAL WHERE plan_version = 1) AS p ON p.plan_id = t.plan_id
JOIN (SELECT goal_id, domain FROM chimera.goals FINAL) AS g ON g.goal_id = p.goal_id
JOIN (SELECT plan_id, task_id, argMax(status, reported_at) AS outcome, argMax(actual_hours, reported_at) AS hours
      FROM chimera.feedback WHERE status IN ('COMPLETED', 'FAILED') GROUP BY plan_id, task_id) AS f
  ON f.plan_id = t.plan_id AND f.task_id = t.task_id
"""


def from_clickhouse(reader) -> list[Example]:
    """Examples from the ClickHouse sink's tables (`reader.query(sql) -> (columns, rows)`,
    sinks.clickhouse.reader()). Tasks without actual hours are skipped."""
    _, rows = reader.query(HISTORY_SQL)
    out = []
    for (_, _, name, phase, domain, opt, ml, pess, caps, ndeps, status, actual, goal_id) in rows:
        if actual is None or not (actual > 0):
            continue
        f = F.TaskFeatures(name=name, kind=phase or "execution", domain=domain, template_hours=float(ml),
                           optimistic=float(opt), pessimistic=float(pess), executor=caps[0] if caps else "",
                           n_deps=int(ndeps))
        out.append(Example(goal_id, f, float(actual), status == "FAILED"))
    return out


def split(examples: list[Example], held_out: float = 0.2, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """By goal (a goal's tasks never straddle the split), deterministic."""
    goals = sorted({e.goal_id for e in examples})
    random.Random(seed).shuffle(goals)
    test_goals = set(goals[:max(1, int(len(goals) * held_out))])
    return [e for e in examples if e.goal_id not in test_goals], [e for e in examples if e.goal_id in test_goals]
