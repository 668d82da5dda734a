"""The ClickHouse sink's fast path (ClickHouse decodes the Avro: sinks/clickhouse_avro.py)
against its Python path (fastavro + rows_for), on chdb and on the real broker."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings

from tests import sinks_fixtures as F
from tests.avro_strategies import records
from topics import registry as T
from topics.serde import serde

pytestmark = [pytest.mark.integration]

FB = T.EXECUTION_FEEDBACK.name
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _fb(i: int, **kw) -> dict:
    v = {"event_id": f"fast-{i}", "plan_id": f"plan-{i % 7}", "task_id": f"t{i % 5}",
         "status": ["STARTED", "PROGRESS", "COMPLETED", "FAILED", "CANCELLED"][i % 5],
         "progress_pct": [0.0, 12.5, 100.0, 33.333333333333336, -0.0][i % 5],
         "actual_hours": [None, 1.5, 2.0, 0.1, 123456.789, 1e-5, 9999999999999998.0][i % 7],
         "message": "", "reported_at_ms": F.T0 + i, "attempt": None if i % 3 else i, "produced": None}
    v.update(kw)
    return v


# Ordinary records, and the awkward but still ordinary: escapes, non-ASCII, "/", DEL, tabs and
# newlines in strings, files produced, keys and headers of every kind.
ORDINARY = [_fb(i) for i in range(40)] + [
    _fb(40, message='line\nnext\t"quoted" back\\slash /path é 日本 \x7f \b\f\r'),
    _fb(41, message="a \\backslash\\, a \\\\ pair, a \\ u apart"),
    _fb(42, produced={"files": ["out/a.txt", "b\n\"c\""], "exit_status": 0}),
    _fb(43, produced={"files": [], "exit_status": None}, attempt=2),
    _fb(44, plan_id="", task_id=""),
]


class _Msg:
    """What the consumer hands the runner, for records built here."""

    def __init__(self, value: bytes, offset: int, key: bytes | None, headers, partition: int = 3) -> None:
        self._v, self._o, self._k, self._h, self._p = value, offset, key, headers, partition

    def topic(self): return FB
    def partition(self): return self._p
    def offset(self): return self._o
    def value(self): return self._v
    def key(self): return self._k
    def headers(self): return self._h
    def timestamp(self): return (1, F.T0 + 1000 + self._o)
    def error(self): return None


def _messages(values: list[dict], start: int = 0) -> list[_Msg]:
    keys = [b"plan-1", None, "clé-ü".encode(), b"\xff\xfebad-utf8"]
    heads = [None, [("traceparent", TRACEPARENT.encode())], [("other", b"x")], [("traceparent", None)]]
    s = serde(FB)
    return [_Msg(s.encode(v), start + i, keys[i % 4], heads[i % 3]) for i, v in enumerate(values)]


@pytest.fixture
def sink(tmp_path_factory):
    """A set-up sink on its own chdb folder, closed after the test (chdb opens one folder per
    process at a time)."""
    from sinks.clickhouse import ClickHouseSink

    sink = ClickHouseSink(tmp_path_factory.mktemp("chfast"))
    sink.setup()
    assert sink.wire(FB) is not None, "no fast path for execution.feedback"
    yield sink
    sink.close()


def _rows(sink) -> bytes:
    """Every row of events and feedback, exactly as ClickHouse holds them (TSV bytes), after a
    merge (which also drops rows past their TTL: some inserts drop them at once, some later)."""
    e = sink.store.engine
    for t in ("events", "feedback"):
        e.query(f"OPTIMIZE TABLE chimera.{t} FINAL", "TSV")
    return b"".join(e.query(f"SELECT * FROM chimera.{t} ORDER BY ALL FORMAT TabSeparated", "TSV").bytes()
                    for t in ("events", "feedback"))


def _truncate(sink) -> None:
    for t in ("events", "feedback"):
        sink.store.engine.query(f"TRUNCATE TABLE chimera.{t}", "TSV")


def _both_paths(sink, msgs: list[_Msg]) -> tuple[bytes, bytes]:
    """The rows the fast path stores for `msgs`, then those the Python path stores (a write the
    fast path refuses raises)."""
    from sinks.base import SinkBatch, _record

    wire = sink.wire(FB)
    _truncate(sink)
    fast = SinkBatch(FB, msgs[0].partition(), msgs[0].offset(), msgs[-1].offset(), list(msgs))
    fast.items = [wire(m.value(), m.key(), m.offset(), m.partition(), m.timestamp()[1], m.headers()) for m in msgs]
    assert all(type(i) is bytes for i in fast.items)
    fast.wired = len(msgs)
    try:
        sink.write(fast)
        fast_rows = _rows(sink)
    finally:
        _truncate(sink)
    recs = [_record(m) for m in msgs]
    for r in recs:
        r.value = serde(FB).decode(r.raw)
    sink.write(SinkBatch(FB, msgs[0].partition(), msgs[0].offset(), msgs[-1].offset(), recs,
                         [sink.prepare(r) for r in recs]))
    python_rows = _rows(sink)
    _truncate(sink)
    return fast_rows, python_rows


def test_fast_path_and_python_path_store_identical_rows(sink):
    """Same records, both paths: byte-identical rows in events (payload JSON, trace ids, keys,
    times) and feedback."""
    fast_rows, python_rows = _both_paths(sink, _messages(ORDINARY))
    assert fast_rows.count(b"\n") == 2 * len(ORDINARY)
    assert fast_rows == python_rows


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                 HealthCheck.too_slow])
@given(value=records(FB, big=False))
def test_any_record_is_stored_alike_or_refused_by_the_fast_path(sink, value):
    """Any record the schema accepts (NaN, huge numbers, control characters, long strings):
    the fast path stores the very rows the Python path does, or refuses it (then the runner
    takes the Python path)."""
    from chdb import ChdbError

    try:
        fast_rows, python_rows = _both_paths(sink, _messages([value]))
    except ChdbError as exc:
        assert "fast path" in str(exc) or "Cannot" in str(exc), exc
        return
    assert fast_rows == python_rows


def test_doubles_are_written_as_orjson_writes_them_or_refused(sink, tmp_path):
    """ClickHouse lays out doubles itself (shortest round-trip digits): across magnitudes and
    random bit patterns, its payload is rows_for's (orjson's text), or the row is refused."""
    import random

    from sinks.base import _record
    from sinks.clickhouse import rows_for

    rng = random.Random(7)
    xs = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(300)]
    xs += [10 ** rng.uniform(-6, 17) * rng.choice([1, -1]) for _ in range(600)]
    xs += [round(rng.uniform(0, 1000), rng.randrange(0, 8)) for _ in range(300)] + [0.0, -0.0, 1e16, 1e-5]
    msgs = _messages([_fb(i, actual_hours=x, progress_pct=xs[-i]) for i, x in enumerate(xs)])
    wire, fast = sink.wire(FB), sink._fast[FB]
    path = tmp_path / "doubles.avro"
    path.write_bytes(fast.container([wire(m.value(), m.key(), m.offset(), m.partition(), m.timestamp()[1],
                                          m.headers()) for m in msgs]))
    # the events view's payload and its check, per row (the view fails the insert where it is 0)
    got = sink.store.engine.query(
        f"SELECT {fast.payload}, {fast.checks['events']} FROM file('{path}', 'Avro') "
        f"SETTINGS {fast_settings()} FORMAT JSONCompactEachRow", "TSV").bytes().splitlines()
    import json
    stored = 0
    for m, line in zip(msgs, got, strict=True):
        payload, ok = json.loads(line)
        if not ok:
            continue
        rec = _record(m)
        rec.value = serde(FB).decode(rec.raw)
        assert payload.encode() == rows_for(rec)["events"][0][6], rec.value
        stored += 1
    assert stored > len(xs) // 3   # both doubles of a row in the range the fast path writes


def fast_settings() -> str:
    from sinks.clickhouse_avro import JSON_SETTINGS
    return JSON_SETTINGS


def test_a_poison_record_inside_a_fast_batch_is_dead_lettered_and_the_rest_stored(kafka_bootstrap, tmp_path):
    """Poison among fast-path records: a body longer or shorter than its schema, invalid UTF-8,
    not Avro, an unknown schema id. ClickHouse refuses the batch, the runner prepares it again in
    Python: each poison record goes to the DLQ with its reason, every other record is stored."""
    from sinks.base import SinkRunner
    from sinks.clickhouse import ClickHouseSink, reader

    prefix = F.unique("chfast")
    s = serde(FB)
    good = [_fb(i, event_id=f"{prefix}-{i}", plan_id=f"{prefix}-p") for i in range(30)]
    wire = [s.encode(v) for v in good]
    bad_utf8 = s.encode(_fb(99, event_id=f"{prefix}-u", message="caf\u00e9")).replace("é".encode(), b"\xff\xfe")
    poison = {
        "trailing": (wire[0][:5] + s.encode(_fb(97, event_id=f"{prefix}-t"))[5:] + b"\x00\x00", "schema_mismatch"),
        "short": (s.encode(_fb(98, event_id=f"{prefix}-s"))[:-3], "schema_mismatch"),
        "utf8": (bad_utf8, "schema_mismatch"),
        "json": (b'{"not": "avro"}', "not_avro"),
        "unknown": (b"\x00" + struct.pack(">I", 99999) + wire[0][5:], "unknown_schema_id"),
    }
    pairs = [(f"{prefix}-p", v) for v in wire[:10]]
    pairs += [(f"{prefix}-poison-{name}", raw) for name, (raw, _) in poison.items()]
    pairs += [(f"{prefix}-p", v) for v in wire[10:]]
    F.produce_raw(kafka_bootstrap, FB, pairs)

    sink = ClickHouseSink(tmp_path / "ch")
    runner = SinkRunner(sink, kafka_bootstrap, group=F.unique("chimera-sink-chfast"), batch_size=1000,
                        batch_age_s=0.5)
    sink.topics, sink.raw_topics = (FB,), ()
    sql = "SELECT count() FROM chimera.feedback FINAL WHERE plan_id = {p:String}"
    with F.running(runner):
        F.wait_until(lambda: sink.store.query(sql, {"p": f"{prefix}-p"})[1][0][0] >= 30
                     and runner.dead_letters >= len(poison) and not runner.batches,
                     timeout=150, what=lambda: f"30 rows and {len(poison)} dead letters (have {runner.dead_letters})")
    assert runner.reprepared >= 1
    store = reader(tmp_path / "ch")
    try:
        assert store.query(sql, {"p": f"{prefix}-p"})[1][0][0] == 30
        events = store.query("SELECT count() FROM chimera.events FINAL WHERE key LIKE {k:String}",
                             {"k": f"{prefix}-%"})[1][0][0]
        assert events == 30   # nothing of the poison records is stored
        # in neither table: the views of one insert run side by side (parallel_view_processing),
        # so each view checks what it writes
        stray = store.query("SELECT count() FROM chimera.feedback WHERE startsWith(event_id, {e:String}) "
                            "AND plan_id != {p:String}", {"e": prefix, "p": f"{prefix}-p"})[1][0][0]
        assert stray == 0
    finally:
        store.close()
    dead = {r["key"]: r["headers"] for r in F.read_dlq(kafka_bootstrap) if r["key"].startswith(f"{prefix}-poison")}
    assert {k.rsplit("-", 1)[1]: h["chimera.dlq.reason"] for k, h in dead.items()} == \
        {name: reason for name, (_, reason) in poison.items()}
    assert all(h["chimera.dlq.sink"] == "clickhouse" for h in dead.values())


def test_fast_path_tables_of_an_older_mapping_are_dropped_at_set_up(sink):
    """A changed schema or mapping names its source table by a new digest; set-up drops the
    older source and its views (they would receive nothing, forever) and keeps the current ones."""
    fast = sink._fast[FB]
    e = sink.store.engine
    name = fast.source.split(".", 1)[1]
    stale = name.rsplit("_", 1)[0] + "_0000000000"
    e.query(f"CREATE TABLE chimera.{stale} (x UInt8) ENGINE = Null", "TSV")
    e.query(f"CREATE MATERIALIZED VIEW chimera.{stale}_events TO chimera.events AS SELECT * FROM chimera.events "
            f"WHERE 0", "TSV")
    assert sorted(fast.drop_stale(e)) == sorted([stale, f"{stale}_events"])
    left = e.query("SELECT name FROM system.tables WHERE database = 'chimera' AND name LIKE 'fast_%' "
                   "ORDER BY name", "TSV").bytes().decode().split()
    assert left and all(n.startswith(name) for n in left), left
    assert fast.drop_stale(e) == []


@pytest.mark.parametrize("offset", [0, 1, 256, 2 ** 40])
def test_a_body_with_trailing_bytes_is_refused_whatever_its_offset(sink, offset):
    """Zero bytes after a body shift the envelope's tail; at offset 0 a tail holding the plain
    offset (all zeros) read the same shifted, and such a record was stored. The tail is a mix
    of the offset, so the shift is seen: the write fails and the Python path takes the batch."""
    from sinks.base import SinkBatch
    s = serde(FB)
    raw = s.encode(_fb(1, event_id=f"trailing-{offset}")) + b"\x00\x00"
    msg = _messages([_fb(0)], start=offset)[0]
    wire = sink.wire(FB)
    item = wire(raw, msg.key(), offset, msg.partition(), msg.timestamp()[1], None)
    assert type(item) is bytes
    batch = SinkBatch(FB, msg.partition(), offset, offset, [msg])
    batch.items, batch.wired = [item], 1
    with pytest.raises(Exception):
        sink.write(batch)
    _truncate(sink)
