"""Task -> (text, feature vector) for the estimator: one encoding for training and serving.

Why here and pure: the trainer, the planner's client and the bench must build the same
vector the served head was trained on. Feature 0 is log(template hours): the estimator
predicts relative to it, so an untrained head reproduces the heuristic.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

FEATURE_DIM = 56
RESOURCE_KINDS = ("cpu", "gpu", "memory_gb", "storage_gb", "agents")
DOMAINS = ("software", "data_ml", "infrastructure", "research", "generic")
BUCKETS = 16   # one-hot buckets for kind, domain and executor (crc32; fewer collided too often)


@dataclass(frozen=True)
class TaskFeatures:
    """What the estimator sees of a task (its planned figures, never its outcome)."""

    name: str
    kind: str                      # the task's phase (design, build, test, ...)
    domain: str
    template_hours: float          # the heuristic's most-likely estimate
    optimistic: float = 0.0
    pessimistic: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    executor: str = ""             # the capability that picks the executor, "" when none
    n_deps: int = 0
    description: str = ""


def _bucket(value: str) -> int:
    return zlib.crc32(value.encode()) % BUCKETS


def text_of(t: TaskFeatures) -> str:
    """The text the encoder reads. Not the description: the ClickHouse history has no
    descriptions, and training must see what serving sees."""
    return f"{t.domain} | {t.kind} | {t.name}"


def vector(t: TaskFeatures) -> np.ndarray:
    v = np.zeros(FEATURE_DIM, dtype=np.float32)
    hours = max(t.template_hours, 0.05)
    v[0] = math.log(hours)
    if t.optimistic > 0 and t.pessimistic >= t.optimistic:
        v[1] = math.log(t.pessimistic / t.optimistic)
    for i, k in enumerate(RESOURCE_KINDS):
        v[2 + i] = math.log1p(max(0.0, float(t.resources.get(k, 0.0))))
    v[7] = math.log1p(max(0, t.n_deps))
    v[8 + _bucket(t.kind)] = 1.0
    v[8 + BUCKETS + (DOMAINS.index(t.domain) if t.domain in DOMAINS else _bucket(t.domain))] = 1.0
    v[8 + 2 * BUCKETS + _bucket(t.executor)] = 1.0
    return v


def batch(tasks: list[TaskFeatures]) -> tuple[list[str], np.ndarray]:
    """Texts and a [n, FEATURE_DIM] float32 matrix."""
    if not tasks:
        return [], np.zeros((0, FEATURE_DIM), dtype=np.float32)
    return [text_of(t) for t in tasks], np.stack([vector(t) for t in tasks])
