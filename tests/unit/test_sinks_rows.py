"""The sinks' pure parts: rows per record, derived ids, poison detection (no services)."""
from __future__ import annotations

import pytest

from tests import sinks_fixtures as F
from topics import registry as T


def _rec(topic, value, offset=0, headers=None, raw=None):
    from sinks.base import SinkRecord
    return SinkRecord(topic, 0, offset, "k", value, raw, headers or {}, F.T0)


def test_a_plan_becomes_plan_task_allocation_and_risk_rows():
    from sinks.clickhouse import rows_for
    p = F.check(T.PLANS_CREATED.name, F.plan("p", "g", risks=[F.risk("r")]))
    rows = rows_for(_rec(T.PLANS_CREATED.name, p))
    assert {t: len(r) for t, r in rows.items() if r} == {"events": 1, "plans": 1, "tasks": 2, "allocations": 2,
                                                        "risks": 1}


def test_records_without_event_id_get_a_deterministic_one_and_dead_letters_keep_theirs():
    from sinks.base import derived_event_id
    g = F.goal("g")
    assert _rec(T.GOALS_CREATED.name, g, 5).event_id == derived_event_id(T.GOALS_CREATED.name, 0, 5)
    assert _rec(T.GOALS_CREATED.name, g, 5).event_id != _rec(T.GOALS_CREATED.name, g, 6).event_id
    h = {"chimera.dlq.reason": b"not_avro", "chimera.source.topic": b"plans.created",
         "chimera.source.partition": b"1", "chimera.source.offset": b"7", "chimera.dlq.sink": b"neo4j"}
    # the same source record dead-lettered twice (a replay) is one event, wherever the DLQ copy sits
    assert _rec(T.SINKS_DLQ.name, None, 3, h).event_id == _rec(T.SINKS_DLQ.name, None, 9, h).event_id


def test_a_record_the_store_cannot_take_is_poison():
    from sinks.base import PoisonRecord
    from sinks.clickhouse import rows_for as ch_rows
    from sinks.neo4j import rows_for as neo_rows
    broken = {"event_id": "e", "plan_id": "p"}           # decodes, but is missing what a plan needs
    for rows_for in (ch_rows, neo_rows):
        with pytest.raises(PoisonRecord) as e:
            rows_for(_rec(T.PLANS_CREATED.name, broken))
        assert e.value.reason == "unstorable"


def test_dead_letter_rows_carry_reason_and_source():
    from sinks.clickhouse import rows_for
    h = {"chimera.dlq.reason": b"not_avro", "chimera.dlq.detail": b"magic byte 123",
         "chimera.source.topic": b"goals.created", "chimera.source.partition": b"2",
         "chimera.source.offset": b"41"}
    (row,) = rows_for(_rec("goals.created.dlq", None, 0, h, raw=b"{bad"))["dead_letters"]
    assert row[:6] == ("goals.created.dlq", "goals.created", 2, 41, "", "not_avro")


def test_unknown_sink_names_are_refused():
    from sinks.service import expand
    assert expand(["all"]) == ["clickhouse", "neo4j", "chroma"]
    assert expand(["neo4j", "all"]) == ["neo4j", "clickhouse", "chroma"]
    with pytest.raises(ValueError):
        expand(["mongo"])


def test_a_tombstone_is_stored_where_the_sink_takes_it_and_counted_elsewhere_never_dead_lettered():
    """A null value on resources.availability deletes a resource: the graph keeps the node,
    marked removed; on a topic the sink keeps no deletions for, it is skipped and counted."""
    from prometheus_client import REGISTRY
    from sinks.base import SinkBatch, SinkRunner
    from sinks.neo4j import Neo4jSink, rows_for

    runner = SinkRunner(Neo4jSink("bolt://127.0.0.1:1"), "127.0.0.1:1", group="unit-tombstones")
    runner._dead_letter = lambda rec, reason, detail: pytest.fail(f"dead-lettered: {reason} {detail}")
    gone = _rec(T.RESOURCES_AVAILABILITY.name, None)
    batch = SinkBatch(T.RESOURCES_AVAILABILITY.name, 0, 0)
    runner._prepare(gone, batch)
    assert [dict(i)["resource"] for i in batch.items] == [[{"id": "k", "props": {"available": False,
                                                                                  "removed": True}}]]
    assert rows_for(gone)["resource"] == batch.items[0]["resource"]
    label = {"sink": "neo4j", "topic": T.PLANS_CREATED.name}
    before = REGISTRY.get_sample_value("chimera_sink_tombstones_total", label) or 0
    other = SinkBatch(T.PLANS_CREATED.name, 0, 1)
    runner._prepare(_rec(T.PLANS_CREATED.name, None, 1), other)
    assert other.items == [] and REGISTRY.get_sample_value("chimera_sink_tombstones_total", label) == before + 1
