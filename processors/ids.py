"""Deterministic identifiers: a replay produces the same ids, so sinks can upsert."""
from __future__ import annotations

import uuid

# Fixed namespace for every Chimera id (never change: ids would shift on replay).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://chimera.invalid/planning")


def plan_id(goal_id: str) -> str:
    """The plan id for a goal: one plan (with versions) per goal."""
    return "plan-" + str(uuid.uuid5(NAMESPACE, f"plan:{goal_id}"))


def event_id(*parts: object) -> str:
    """An event id over its parts (e.g. topic, plan_id, version, kind)."""
    joined = "\x1f".join(str(p) for p in parts)
    return str(uuid.uuid5(NAMESPACE, f"event:{joined}"))
