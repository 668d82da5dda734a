"""A plan's state as the bytes its table stores: a small JSON header (goal fingerprint,
task runs, alerted risks, finish time) and the plan itself in Avro (the plans.created
schema, zlib level 1: ~0.2 ms), about a tenth of the JSON it replaces. The last plans'
compressed bytes are cached so feedback, which changes runs but not the plan, does not
re-encode them.
"""
from __future__ import annotations

import json
import struct
import zlib
from collections import OrderedDict
from types import MappingProxyType

from processors.lifecycle import PlanState, RunStatus, TaskRun
from streams import codec
from topics import registry as T
from topics.serde import serde

_LEN = struct.Struct(">I")
_CACHE_SIZE = 2048


class _PlanBytes:
    """(plan_id, version) -> Avro bytes of that plan version, for the most recent plans."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, int], tuple[object, bytes]] = OrderedDict()

    def encode(self, plan) -> bytes:
        key = (plan.plan_id, plan.version)
        hit = self._items.get(key)
        if hit is not None and hit[0] is plan:
            self._items.move_to_end(key)
            return hit[1]
        data = zlib.compress(serde(T.PLANS_CREATED.name).encode(codec.plan_record(plan)), 1)
        self.remember(plan, data)
        return data

    def remember(self, plan, data: bytes) -> None:
        self._items[(plan.plan_id, plan.version)] = (plan, data)
        self._items.move_to_end((plan.plan_id, plan.version))
        while len(self._items) > _CACHE_SIZE:
            self._items.popitem(last=False)


_plans = _PlanBytes()


def encode(state: PlanState) -> bytes:
    header = json.dumps({
        "d": state.goal_digest,
        "r": {t: [r.status.value, r.attempt] for t, r in state.runs.items()},
        "a": sorted(state.alerted),
        "f": state.finished_at_ms,
    }, separators=(",", ":")).encode()
    return _LEN.pack(len(header)) + header + _plans.encode(state.plan)


def decode(data: bytes) -> PlanState:
    (n,) = _LEN.unpack_from(data)
    header = json.loads(data[_LEN.size:_LEN.size + n])
    body = data[_LEN.size + n:]
    plan = codec.plan_from_record(serde(T.PLANS_CREATED.name).decode(zlib.decompress(body)))
    _plans.remember(plan, body)
    return PlanState(plan=plan, goal_digest=header["d"],
                     runs=MappingProxyType({t: TaskRun(RunStatus(s), a) for t, (s, a) in header["r"].items()}),
                     alerted=frozenset(header["a"]), finished_at_ms=header["f"])


def finished_at(data: bytes) -> int | None:
    """The finish time without decoding the plan (for expiry scans)."""
    (n,) = _LEN.unpack_from(data)
    return json.loads(data[_LEN.size:_LEN.size + n])["f"]
