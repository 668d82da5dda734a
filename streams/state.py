"""A plan's state as the bytes its table stores: a small JSON header (goal fingerprint,
task runs, alerted risks, finish time) and the plan itself in Avro (the plans.created
schema, zlib level 1: ~0.2 ms), about a tenth of the JSON it replaces. The last plans'
compressed bytes are cached so feedback, which changes runs but not the plan, does not
re-encode them, and a new plan's state reuses the plans.created value already encoded for
it (`remember_encoded`: the same bytes, so the plan is encoded once per goal, not twice).
"""
from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from types import MappingProxyType

import orjson

from processors import lifecycle as L
from processors.config import PlanningConfig
from processors.lifecycle import PlanState, PlanStatus, RunStatus, TaskRun
from processors.model import Constraints, Goal, LearnedEstimate, Priority, TaskSpec
from streams import codec, plan_bytes
from topics import registry as T
from topics.serde import serde

_LEN = struct.Struct(">I")
# The cache only has to bridge one record: decode (or the plans.created encode) -> encode of
# the new state. Each entry keeps its Plan alive (~80 objects), and 2,048 of them were ~166k
# objects that every full collection walked: 75-200 ms pauses every few seconds, the p99.
# Decoded plans are kept too (feedback decodes a plan's state per record; the plan changes only
# with a new version): 256 plans are the working set of a busy worker, not its whole table.
_CACHE_SIZE = 256
_LEDGER_CACHE_SIZE = 64
# OrderedDicts: popping a plain dict's oldest key walks the slots already emptied at its
# front (O(pops so far)): it had become a measurable part of every state encode
_ledgers: OrderedDict[bytes, object] = OrderedDict()   # stored ledger bytes -> decoded LedgerState (by age)
_states: OrderedDict[bytes, PlanState] = OrderedDict()  # stored state bytes -> PlanState, plans handled last


def forget() -> None:
    """Drop every cached decode (a test of the codec itself must decode the bytes)."""
    _states.clear()
    _ledgers.clear()
    _booking_json.clear()
    plan_bytes.forget()
    _plans.__init__()


def _remember(cache: OrderedDict, data: bytes, value, size: int) -> None:
    cache[data] = value
    cache.move_to_end(data)
    while len(cache) > size:
        cache.popitem(last=False)


class _PlanBytes:
    """(plan_id, version) -> Avro bytes of that plan version, for the most recent plans."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, int], tuple[object, bytes]] = OrderedDict()
        self._by_data: dict[bytes, tuple[str, int]] = {}

    def plan_for(self, data: bytes):
        """The plan whose compressed bytes these are, if it is one of the last plans."""
        key = self._by_data.get(data)
        if key is None:
            return None
        self._items.move_to_end(key)
        return self._items[key][0]

    def encode(self, plan) -> bytes:
        key = (plan.plan_id, plan.version)
        hit = self._items.get(key)
        if hit is not None and hit[0] is plan:
            self._items.move_to_end(key)
            return hit[1]
        data = zlib.compress(plan_bytes.created(plan), 1)   # the body plans.updated carries too
        self.remember(plan, data)
        return data

    def remember_encoded(self, plan, value: bytes) -> None:
        """`value`: the plans.created wire bytes of `plan` (what `encode` would compress)."""
        self.remember(plan, zlib.compress(value, 1))

    def remember(self, plan, data: bytes) -> None:
        key = (plan.plan_id, plan.version)
        old = self._items.get(key)
        if old is not None:
            self._by_data.pop(old[1], None)
        self._items[key] = (plan, data)
        self._items.move_to_end(key)
        self._by_data[data] = key
        while len(self._items) > _CACHE_SIZE:
            _, (_, gone) = self._items.popitem(last=False)
            self._by_data.pop(gone, None)


_plans = _PlanBytes()
remember_encoded = _plans.remember_encoded


_RUN_DEFAULTS = (None, None, None, None, 0, 0.0, 0.0, 0.0, 0.0, [])   # TaskRun fields after status, attempt


def _run(r: TaskRun) -> list:
    out = [r.status.value, r.attempt, r.resource_id, r.assigned_at_ms, r.deadline_ms, r.due_ms, r.failures,
           r.percent, r.actual_hours, r.actual_cost, r.cost_per_hour, list(r.tried)]
    while len(out) > 2 and out[-1] == _RUN_DEFAULTS[len(out) - 3]:
        out.pop()
    return out


def _run_back(x: list) -> TaskRun:
    rest = list(x[2:]) + list(_RUN_DEFAULTS[len(x) - 2:])
    return TaskRun(RunStatus(x[0]), x[1], *rest[:-1], tuple(rest[-1]))


def goal_json(g: Goal | None) -> dict | None:
    """The goal as planned, exactly (replans need it; floats stay floats)."""
    if g is None:
        return None
    c = g.constraints
    return {"id": g.goal_id, "t": g.title, "at": g.created_at_ms, "de": g.description, "do": g.domain,
            "p": g.priority.value, "o": list(g.objectives), "sc": list(g.success_criteria),
            "c": [c.deadline_hours, c.budget, c.max_parallelism, dict(c.capacities), list(c.required_capabilities)],
            "s": g.strategy, "by": g.submitted_by,
            "ts": [[t.task_id, t.name, t.duration_hours, list(t.depends_on), dict(t.resources), list(t.capabilities)]
                   for t in g.tasks],
            **({"le": [[e.task_id, e.low, e.median, e.high, e.failure_p] for e in g.estimates]} if g.estimates else {})}


def goal_back(d: dict | None) -> Goal | None:
    if d is None:
        return None
    c = d["c"]
    return Goal(goal_id=d["id"], title=d["t"], created_at_ms=d["at"], description=d["de"], domain=d["do"],
                priority=Priority(d["p"]), objectives=tuple(d["o"]), success_criteria=tuple(d["sc"]),
                constraints=Constraints(c[0], c[1], c[2], dict(c[3]), tuple(c[4])), strategy=d["s"],
                tasks=tuple(TaskSpec(t[0], t[1], t[2], tuple(t[3]), dict(t[4]), tuple(t[5])) for t in d["ts"]),
                submitted_by=d["by"], estimates=tuple(LearnedEstimate(*e) for e in d.get("le", ())))


def encode(state: PlanState, config: PlanningConfig | None = None) -> bytes:
    """The state's bytes. The header also carries what the worker's timers scan for without
    decoding the plan: when the plan is next due, the resources it uses, whether it is held."""
    cfg = config or PlanningConfig()
    header = orjson.dumps({
        "d": state.goal_digest,
        "r": {t: _run(r) for t, r in state.runs.items()},
        "a": sorted(state.alerted),
        "f": state.finished_at_ms,
        "g": goal_json(state.goal),
        "st": state.status.value, "er": state.end_reason, "sp": state.stopped, "h": state.hold,
        "sn": list(state.seen), "lp": state.last_progress_ms, "lc": state.last_check_ms, "rp": state.replans, "bo": state.budget_ok,
        "n": L.next_due_ms(state, cfg), "u": list(L.resources_in_use(state)), "hd": L.held(state),
    })
    data = _LEN.pack(len(header)) + header + _plans.encode(state.plan)
    _remember(_states, data, state, _CACHE_SIZE)
    return data


def decode(data: bytes) -> PlanState:
    hit = _states.get(data)
    if hit is not None:   # the state this worker stored last for the plan: immutable, reuse it
        return hit
    (n,) = _LEN.unpack_from(data)
    header = orjson.loads(data[_LEN.size:_LEN.size + n])
    body = data[_LEN.size + n:]
    plan = _plans.plan_for(body)
    if plan is None:   # feedback changes runs, not the plan: decode a plan version once
        plan = codec.plan_from_record(serde(T.PLANS_CREATED.name).decode(zlib.decompress(body)))
        _plans.remember(plan, body)
    state = PlanState(plan=plan, goal_digest=header["d"],
                     runs=MappingProxyType({t: _run_back(x) for t, x in header["r"].items()}),
                     alerted=frozenset(header["a"]), finished_at_ms=header["f"],
                     goal=goal_back(header.get("g")), status=PlanStatus(header.get("st", "ACTIVE")),
                     end_reason=header.get("er", ""), stopped=header.get("sp", False), hold=header.get("h", ""),
                     seen=tuple(header.get("sn", ())), last_progress_ms=header.get("lp"),
                     last_check_ms=header.get("lc"), replans=header.get("rp", 0),
                     budget_ok=header.get("bo", False))
    _remember(_states, data, state, _CACHE_SIZE)
    return state


def header(data: bytes) -> dict:
    """The JSON header alone (timers scan it without decoding the plan)."""
    (n,) = _LEN.unpack_from(data)
    return orjson.loads(data[_LEN.size:_LEN.size + n])


def finished_at(data: bytes) -> int | None:
    """The finish time without decoding the plan (for expiry scans)."""
    (n,) = _LEN.unpack_from(data)
    return orjson.loads(data[_LEN.size:_LEN.size + n])["f"]


# -- a resource's ledger (allocation.LedgerState) as the ledger table stores it ------------

def _request(q) -> list:
    return [q.plan_id, q.task_id, q.attempt, dict(q.demand), list(q.capabilities), q.priority.value,
            q.slack_hours, q.hours, q.requested_at_ms]


def _request_back(resource_id: str, x: list):
    from processors.allocation import AllocationRequest
    return AllocationRequest(x[0], x[1], x[2], resource_id, MappingProxyType(dict(x[3])), tuple(x[4]),
                             Priority(x[5]), x[6], x[7], x[8])


# resource id -> {booking key: (Booking, its JSON)} of the ledger encoded last: a decision
# changes one or two bookings of hundreds, so the others' bytes are reused, not rebuilt
_booking_json: dict[str, dict] = {}


def _bookings_json(rid: str, bookings) -> bytes:
    """`[[request, booked_at_ms], ...]` as orjson writes it, each booking encoded once."""
    old = _booking_json.pop(rid, None) or {}
    cur = {}
    for k, b in bookings.items():
        hit = old.get(k)
        if hit is None or hit[0] is not b:
            hit = (b, orjson.dumps([_request(b.request), b.booked_at_ms]))
        cur[k] = hit
    _booking_json[rid] = cur
    while len(_booking_json) > _LEDGER_CACHE_SIZE:
        _booking_json.pop(next(iter(_booking_json)))
    return b"[" + b",".join([j for _, j in cur.values()]) + b"]"


def encode_ledger(s) -> bytes:
    """The same bytes as orjson.dumps({"b": bookings, "w": waiting, "br": breaker})."""
    b = s.breaker
    rest = orjson.dumps({
        "w": [_request(q) for q in s.ledger.waiting],
        "br": [b.state.value, b.failures, b.opened_at_ms, b.trial_in_flight, [list(t) for t in b.failed]],
    })
    data = b'{"b":' + _bookings_json(s.ledger.resource.resource_id, s.ledger.bookings) + b"," + rest[1:]
    _remember(_ledgers, data, s, _LEDGER_CACHE_SIZE)
    return data


def decode_ledger(data: bytes, resource):
    """The stored ledger of `resource` (its announcement comes from the resources table)."""
    from processors.allocation import Booking, LedgerState, ResourceLedger
    from processors.retry import Breaker, BreakerState
    hit = _ledgers.get(data)
    if hit is not None and hit.ledger.resource == resource:   # immutable: reuse the decoded one
        return hit
    d = orjson.loads(data)
    rid = resource.resource_id
    bookings = {}
    for x, at in d["b"]:
        q = _request_back(rid, x)
        bookings[q.key] = Booking(q, at)
    br = d["br"]
    state = LedgerState(ResourceLedger(resource, MappingProxyType(bookings),
                                       tuple(_request_back(rid, x) for x in d["w"])),
                        Breaker(BreakerState(br[0]), br[1], br[2], br[3],
                                tuple(tuple(t) for t in br[4]) if len(br) > 4 else ()))   # 4 items: stored before
    _remember(_ledgers, data, state, _LEDGER_CACHE_SIZE)
    return state
