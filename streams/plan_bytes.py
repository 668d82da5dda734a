"""A plan version's Avro body, encoded once for everything that carries it.

A plan version travels three times: on plans.created or plans.updated (the record's `plan`
field) and in the plan's stored state (streams/state.py stores its plans.created value).
Avro writes a nested record exactly as it writes the record alone, so the body of the
chimera.Plan record is encoded once per version and spliced: a plans.updated value is its
fields before `plan`, the body, and its fields after `plan`, each part written by fastavro
with the schema's own field types. Encoding the plan (~0.5 ms for 8 tasks) was the largest
cost of a feedback record that publishes a version, and it was paid twice.
"""
from __future__ import annotations

import io
import json
from collections import OrderedDict

import fastavro

from topics import registry as T, schemas
from topics.serde import serde

_CACHE_SIZE = 256   # the versions handled last (each entry keeps its Plan alive)
_bodies: OrderedDict[tuple[str, int], tuple[object, bytes]] = OrderedDict()


def body(plan, record: dict | None = None) -> bytes:
    """The Avro body (no wire header) of `plan` as a chimera.Plan record (`record`: its
    codec.plan_record when the caller has it already)."""
    from streams.codec import plan_record
    key = (plan.plan_id, plan.version)
    hit = _bodies.get(key)
    if hit is not None and hit[0] is plan:
        _bodies.move_to_end(key)
        return hit[1]
    data = serde(T.PLANS_CREATED.name).encode(record if record is not None else plan_record(plan))[5:]
    _bodies[key] = (plan, data)
    _bodies.move_to_end(key)
    while len(_bodies) > _CACHE_SIZE:
        _bodies.popitem(last=False)
    return data


def created(plan) -> bytes:
    """The plans.created value of `plan` (wire format)."""
    return serde(T.PLANS_CREATED.name).header + body(plan)


class _Splice:
    """The record schema of a topic whose value holds the plan in one field: the fields around
    it as two record schemas of their own (None when a field around it is not a primitive
    type, whose named types could be defined inside the plan: then nothing is spliced)."""

    PRIMITIVE = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}

    def __init__(self, topic: str, field: str = "plan") -> None:
        self.topic = topic
        fields = json.loads(schemas.expanded(T.spec(topic).schema_name))["fields"]
        names = [f["name"] for f in fields]
        at = names.index(field)
        self.ok = all(self._primitive(f["type"]) for i, f in enumerate(fields) if i != at)
        self.head = self._schema("Head", fields[:at])
        self.tail = self._schema("Tail", fields[at + 1:])
        self.head_names = names[:at]
        self.tail_names = names[at + 1:]

    def _primitive(self, t) -> bool:
        if isinstance(t, list):
            return all(self._primitive(x) for x in t)
        return isinstance(t, str) and t in self.PRIMITIVE

    @staticmethod
    def _schema(name: str, fields: list) -> dict:
        return fastavro.parse_schema({"type": "record", "name": f"chimera.splice.{name}", "fields": fields})

    def encode(self, value: dict, plan) -> bytes:
        buf = io.BytesIO()
        buf.write(serde(self.topic).header)
        fastavro.schemaless_writer(buf, self.head, {k: value[k] for k in self.head_names})
        buf.write(body(plan, value.get("plan")))
        fastavro.schemaless_writer(buf, self.tail, {k: value[k] for k in self.tail_names})
        return buf.getvalue()


_splices: dict[str, _Splice] = {}


def updated(value: dict, plan) -> bytes:
    """The plans.updated value whose `plan` field is `plan` (wire format)."""
    s = _splices.get(T.PLANS_UPDATED.name)
    if s is None:
        s = _splices[T.PLANS_UPDATED.name] = _Splice(T.PLANS_UPDATED.name)
    if not s.ok:
        return serde(T.PLANS_UPDATED.name).encode(value)
    return s.encode(value, plan)


def forget() -> None:
    _bodies.clear()
