"""Hypothesis strategies for records of any Chimera topic, built from its Avro schema:
every field present with values a hostile or unlucky producer could send (NaN, infinities,
huge and negative numbers, long strings, many items), all still valid Avro."""
from __future__ import annotations

import math

from hypothesis import strategies as st

from topics import schemas
from topics.registry import spec

_LONG = st.one_of(st.integers(-(2 ** 63), 2 ** 63 - 1), st.sampled_from([0, 1, -1, 1_700_000_000_000, 2 ** 62]))
_INT = st.one_of(st.integers(-(2 ** 31), 2 ** 31 - 1), st.sampled_from([0, 1, -1, 3]))
_DOUBLE = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e9, 2.5e7, 1e300, -1e300, math.nan, math.inf, -math.inf,
                                     5e-324]))
def _text(largest: int):
    return st.one_of(st.text(max_size=20), st.sampled_from(["a", "b", "c", ""]),
                     st.integers(0, largest).map(lambda k: "x" * (10 ** k)))


def _strategy(node, named: dict, big: bool = True):
    """`big`: also strings up to a megabyte and lists of hundreds of records (slow to
    generate; for in-process tests)."""
    if isinstance(node, str):
        if node in named:
            return _strategy(named[node], named)
        return {"null": st.none(), "boolean": st.booleans(), "int": _INT, "long": _LONG, "float": _DOUBLE,
                "double": _DOUBLE, "string": _text(6 if big else 4), "bytes": st.binary(max_size=64)}[node]
    if isinstance(node, list):
        return st.one_of([_strategy(n, named, big) for n in node])
    t = node["type"]
    if t == "record":
        named[node["name"]] = node
        if "namespace" in node:
            named[f"{node['namespace']}.{node['name']}"] = node
        return st.fixed_dictionaries({f["name"]: st.deferred(lambda f=f: _strategy(f["type"], named, big))
                                      for f in node["fields"]})
    if t == "enum":
        named[node["name"]] = node
        return st.sampled_from(node["symbols"])
    if t == "array":
        items = _strategy(node["items"], named, big)
        if not big:
            return st.lists(items, max_size=4)
        return st.one_of(st.lists(items, max_size=4), st.lists(items, min_size=600, max_size=1600))
    if t == "map":
        return st.dictionaries(st.sampled_from(["cpu", "gpu", "memory_gb", "agents", "x" * 300]),
                               _strategy(node["values"], named, big), max_size=4)
    return _strategy(t, named, big)


def records(topic: str, *, big: bool = True):
    """Any value the topic's current schema accepts; with big=False only records a broker
    takes (strings up to 10 kB, lists up to 4 items: well under its message size)."""
    import json
    return _strategy(json.loads(schemas.expanded(spec(topic).schema_name)), {}, big)
