"""Avro serde in the Confluent wire format, and schema evolution rules."""
import json
import struct

import pytest

from topics import schemas
from topics.registry import TOPICS, all_topic_names, spec
from topics.serde import MAGIC, SerdeError, serde
from streams import samples


def _goal(**over):
    g = samples.sample_goals(1, 1_700_000_000_000)[0]
    g.update(over)
    return g


def test_goal_round_trip_in_wire_format():
    s = serde("goals.created")
    data = s.encode(_goal())
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == MAGIC and schema_id == schemas.history("goals.created")[-1][1]
    assert s.decode(data) == {"tenant": "", **_goal()}   # an added field decodes to its default


def test_internal_topic_shares_the_goal_schema():
    assert spec("chimera.goals.by_plan").schema_name == "goals.created"
    assert serde("chimera.goals.by_plan").decode(serde("goals.created").encode(_goal())) == {"tenant": "", **_goal()}


@pytest.mark.parametrize("data,reason", [
    (b"", "not_avro"), (b'{"goal_id": "x"}', "not_avro"), (b"\x00\x00\x00\x03\xe7abc", "unknown_schema_id"),
])
def test_undecodable_bytes_have_reasons(data, reason):
    with pytest.raises(SerdeError) as e:
        serde("goals.created").decode(data)
    assert e.value.reason == reason


def test_truncated_and_trailing_bytes_are_mismatches():
    good = serde("goals.created").encode(_goal())
    for bad in (good[:-3], good + b"\x00\x01"):
        with pytest.raises(SerdeError) as e:
            serde("goals.created").decode(bad)
        assert e.value.reason == "schema_mismatch"


def test_plan_bytes_are_not_a_goal():
    """A record of another topic's schema decodes with its own writer schema then fails resolution."""
    feedback = serde("execution.feedback").encode({"event_id": "e", "plan_id": "p", "task_id": "t",
                                                   "status": "COMPLETED", "reported_at_ms": 1})
    with pytest.raises(SerdeError) as e:
        serde("goals.created").decode(feedback)
    assert e.value.reason == "schema_mismatch"


def test_encode_rejects_missing_required_field():
    g = _goal()
    del g["goal_id"]
    with pytest.raises(SerdeError) as e:
        serde("goals.created").encode(g)
    assert e.value.reason == "schema_mismatch" and "goal_id" in str(e.value)


def test_every_topic_has_a_released_schema_matching_the_file():
    for t in TOPICS:
        versions = schemas.history(t.schema_name)
        assert versions, f"{t.schema_name} never released"
        assert schemas.fingerprint(versions[-1][2]) == schemas.fingerprint(schemas.expanded(t.schema_name)), (
            f"{t.schema_name}.avsc changed without a release: run `python -m topics.schemas`")


def test_schema_ids_are_unique():
    ids = [sid for t in schemas.ORDER for _, sid, _ in schemas.history(t)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", schemas.ORDER)
def test_current_schema_reads_every_released_version(name):
    """Backward compatibility: data written with any released version stays readable."""
    for version, _, old in schemas.history(name):
        assert schemas.incompatibility(old, schemas.expanded(name)) is None, f"{name} v{version}"


def test_incompatibility_is_detected():
    """The checker itself can fail: a new required field without default breaks old data."""
    old = schemas.expanded("execution.feedback")
    new = json.loads(old)
    new["fields"].append({"name": "worker", "type": "string"})
    assert schemas.incompatibility(old, json.dumps(new)) is not None
    new = json.loads(old)
    new["fields"].append({"name": "worker", "type": "string", "default": ""})
    assert schemas.incompatibility(old, json.dumps(new)) is None


def test_expanded_schemas_are_self_contained():
    import fastavro
    for name in schemas.ORDER:
        fastavro.parse_schema(json.loads(schemas.expanded(name)))  # raises on unknown named types


def test_dlq_topics_exist_for_every_input():
    names = all_topic_names()
    for t in TOPICS:
        assert (t.dlq in names) == t.has_dlq


@pytest.mark.parametrize("field,value", [("created_at_ms", "x"), ("priority", "BOGUS"), ("title", 5)])
def test_encode_rejects_wrong_types(field, value):
    with pytest.raises(SerdeError) as e:
        serde("goals.created").encode(_goal(**{field: value}))
    assert e.value.reason == "schema_mismatch" and field in str(e.value)


def test_strict_encode_rejects_what_the_writer_would_truncate():
    serde("goals.created").encode(_goal(created_at_ms=1.5))  # the bare writer truncates silently
    with pytest.raises(SerdeError):
        serde("goals.created").encode(_goal(created_at_ms=1.5), strict=True)


def test_schema_order_is_the_registrys_schemas_once():
    assert sorted(schemas.ORDER) == sorted({t.schema_name for t in TOPICS})
    assert len(schemas.ORDER) == len(set(schemas.ORDER))
    assert schemas.ORDER.index("plans.created") < schemas.ORDER.index("tasks.assigned")


def _record(name, **fields):
    return {"type": "record", "name": name, "namespace": "x",
            "fields": [{"name": f, "type": t} for f, t in fields.items()]}


def test_dependency_order_puts_the_files_that_define_used_types_first():
    raws = {"uses": _record("User", a="x.A"), "plain": _record("P", n="long"), "defines": _record("A", n="long")}
    assert schemas.dependency_order(raws) == ("defines", "uses", "plain")   # else registry order
    with pytest.raises(ValueError):
        schemas.dependency_order({"a": _record("A", b="x.B"), "b": _record("B", a="x.A")})


def test_forged_source_headers_fall_back_to_the_records_own_position():
    from topics.dlq import SOURCE_HEADERS, source_of
    forged = [(SOURCE_HEADERS[0], b"goals.created"), (SOURCE_HEADERS[1], b"not a number"), (SOURCE_HEADERS[2], b"7")]
    assert source_of(forged, "execution.feedback", 2, 41) == ("execution.feedback", 2, 41)
    assert source_of([(k, b"\xff") for k in SOURCE_HEADERS], "t", 0, 1) == ("t", 0, 1)
    good = [(SOURCE_HEADERS[0], b"goals.created"), (SOURCE_HEADERS[1], b"3"), (SOURCE_HEADERS[2], b"9")]
    assert source_of(good, "chimera.goals.by_plan", 0, 1) == ("goals.created", 3, 9)
