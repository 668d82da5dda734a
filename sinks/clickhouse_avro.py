"""The ClickHouse sink's fast path: ClickHouse decodes the Avro, as its own Kafka engine does.

Decoding every record in Python (fastavro, ~6 us a record) and handing clickhouse-connect
rows to serialise (more Python per value) costs more than the 30% slack the sink has over
raw inserts of the same rows. On this path Python only checks the 5-byte wire header and
frames the record: the Avro body goes to ClickHouse untouched, wrapped in an *envelope*
record whose fields are

    _chimera_head  fixed(20)  offset (u64 LE), Kafka timestamp in ms (i64 LE), partition (u32 LE)
    _chimera_key   string     the record's key
    _chimera_trace string     the trace id of its traceparent header ("" without one)
    ...                       the writer schema's fields, as they are: the body's bytes
    _chimera_tail  fixed(8)   a mix of the offset (u64 LE of offset * MIX_MUL + MIX_ADD, mod 2**64)

(an Avro record is its fields' encodings one after the other, so head + key + trace + body +
tail *is* one envelope record). A batch becomes one Avro object-container file (the header
once per schema, one block), inserted into a Null-engine table whose materialized views
write `events` and the topic's typed tables: parsed once, one insert, the batch's
deduplication token carried by ClickHouse to each view's insert.

Only records written with the topic's current schema take this path (same bytes layout as
the reader schema: nothing to resolve); other schema ids, bad headers and everything else
take the Python path (decode, rows_for), which also dead-letters poison. A body that does
not match its schema cannot slip through: the tail must be the mix of the head's offset (a
body longer or shorter than its schema shifts it; the offset itself was no check, as zero
bytes after a body at offset 0 read as that offset again), every string must be valid UTF-8 (fastavro
refuses the rest), and ClickHouse refuses what it cannot parse (an enum or union index out
of range, a block that ends early). An empty event_id (the Python path derives one) is left
to the Python path too. Any of these fails the insert, and the runner prepares that batch
again through the Python path (SinkRunner._unwire), where the bad record is found and
dead-lettered with its reason.

The payload column must be the JSON orjson writes for the decoded value (rows_for):
ClickHouse's own JSON writer, set to orjson's layout (JSON_SETTINGS), writes strings,
enums, integers, nulls and nested records alike; doubles are laid out from toString (same
shortest round-trip digits, ".0" added to whole numbers). What it would write differently
(doubles outside 1e-5..1e16 or not finite, \\u escapes) fails the insert: Python path.
tests/integration/test_sinks_clickhouse_fast.py compares both paths' rows byte for byte.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import tempfile

import fastavro

from topics import schemas

_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
HEAD = struct.Struct("<QqI")
TAIL = struct.Struct("<Q")
MIX_MUL, MIX_ADD = 0x9E3779B97F4A7C15, 0x632BE59BD9B4E019   # no byte pattern that a shift reproduces


def tail(offset: int) -> bytes:
    """The envelope's last field: ClickHouse recomputes it from the head (see `aligned`)."""
    return TAIL.pack((offset * MIX_MUL + MIX_ADD) & 0xFFFFFFFFFFFFFFFF)
META = [{"name": "_chimera_head", "type": {"type": "fixed", "name": "ChimeraHead", "size": 20}},
        {"name": "_chimera_key", "type": "string"},
        {"name": "_chimera_trace", "type": "string"}]
END = [{"name": "_chimera_tail", "type": {"type": "fixed", "name": "ChimeraTail", "size": 8}}]


def zigzag(n: int) -> bytes:
    """Avro's long encoding (zigzag varint)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


LENGTHS = [zigzag(n) for n in range(4096)]


class Unsupported(ValueError):
    """A schema this path cannot map exactly (the topic stays on the Python path)."""


# ----------------------------------------------------------------------------- SQL from the schema

def _q(text: str) -> str:
    """A SQL string literal (control characters as \\xHH escapes)."""
    body = text.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + re.sub(r"[\x00-\x1f]", lambda m: f"\\x{ord(m.group()):02x}", body) + "'"


# ClickHouse's JSON writer, set to write what orjson writes: 64-bit integers unquoted, "/"
# as it is, named tuples (Avro records) as objects, NaN and infinities as null.
JSON_SETTINGS = ("output_format_json_quote_64bit_integers = 0, output_format_json_escape_forward_slashes = 0, "
                 "output_format_json_named_tuples_as_objects = 1, output_format_json_quote_denormals = 0")
# The views of one insert run side by side (one thread each): measured, a 5,000-record
# feedback container took ~45-48 ms instead of ~60 ms (bench/README.md, Sinks).
VIEW_SETTINGS = "parallel_view_processing = 1"
# What it still writes differently: \u000B (orjson: \u000b) for the control characters whose
# code has a letter, and U+2028/U+2029 escaped (orjson: as they are). A payload with any
# \u escape (or a string that merely contains that text) is left to Python: one substring
# search, cheaper than telling those apart.
_ESCAPE = "\\u"


def _has_double(node, named: dict) -> bool:
    node = _resolve(node, named)
    if isinstance(node, list):
        return any(_has_double(b, named) for b in node)
    if isinstance(node, str):
        return node in ("double", "float")
    t = node["type"]
    if isinstance(t, (dict, list)):
        return _has_double(t, named)
    if t == "record":
        return any(_has_double(f["type"], named) for f in node["fields"])
    if t == "array":
        return _has_double(node["items"], named)
    if t == "map":
        return _has_double(node["values"], named)
    return t in ("double", "float")


def json_double(x: str) -> tuple[str, str]:
    """(A Float64 as orjson writes it, the condition for that). ClickHouse's toString gives
    the same shortest round-trip digits, laid out positionally from 1e-5 up to 1e16 as orjson
    does, which adds ".0" to whole numbers (checked on 142,000 values across that range, and
    on random ones by the tests). Other magnitudes (orjson: `1e-7`, `1.5e+16`), NaN and
    infinities (orjson: null) are left to Python (the condition)."""
    s = f"toString({x})"
    ok = f"isFinite({x}) AND ({x} = 0 OR (abs({x}) >= 1e-5 AND abs({x}) < 1e16))"
    return f"concat({s}, if({x} = trunc({x}), '.0', ''))", ok


def _resolve(node, named: dict):
    if isinstance(node, str) and node in named:
        return named[node]
    return node


def _register(node, named: dict) -> None:
    if isinstance(node, list):
        for b in node:
            _register(b, named)
    elif isinstance(node, dict):
        if "name" in node and node.get("type") in ("record", "enum", "fixed"):
            named[node["name"]] = node
            if "namespace" in node:
                named[f"{node['namespace']}.{node['name']}"] = node
        for f in node.get("fields", ()):
            _register(f["type"], named)
        for k in ("items", "values"):
            if k in node:
                _register(node[k], named)
        if isinstance(node.get("type"), (dict, list)):
            _register(node["type"], named)


def walk(node, x: str, named: dict, checks: list[str]) -> str:
    """The JSON of the value as orjson writes fastavro's decoding of it; conditions that
    must hold for that go to `checks`."""
    node = _resolve(node, named)
    if isinstance(node, list):   # a union: only [null, T] maps exactly (a Nullable column)
        branches = [b for b in node if b != "null"]
        if len(node) != 2 or len(branches) != 1:
            raise Unsupported(f"union {node}")
        # functions of a Nullable column give NULL for NULL (no branches: ClickHouse's
        # short-circuit if() costs more than the rest of the expression)
        inner_checks: list[str] = []
        inner = walk(branches[0], x, named, inner_checks)
        checks += [f"ifNull({c}, 1)" for c in inner_checks]
        return f"ifNull({inner}, 'null')"
    t = node if isinstance(node, str) else node["type"]
    if isinstance(t, (dict, list)):
        return walk(t, x, named, checks)
    if t in ("string", "enum", "boolean"):
        return f"toJSONString({x})"
    if t in ("long", "int"):
        return f"toString({x})"
    if t in ("double", "float"):
        text, ok = json_double(x if t == "double" else f"toFloat64({x})")
        checks.append(ok)
        return text
    if t == "record" and x and not _has_double(node, named):
        return f"toJSONString({x})"          # a named tuple: an object, fields in order
    if t == "record":
        parts = []
        for i, f in enumerate(node["fields"]):
            parts.append(_q(("{" if i == 0 else ",") + json.dumps(f["name"]) + ":"))
            parts.append(walk(f["type"], f"tupleElement({x}, {_q(f['name'])})" if x else f["name"], named, checks))
        parts.append("'}'" if node["fields"] else "'{}'")
        return f"concat({', '.join(parts)})"
    if t == "array" and not _has_double(node, named):
        return f"toJSONString({x})"
    raise Unsupported(f"type {t}")


def payload_sql(schema: dict) -> tuple[str, str]:
    """(The payload column: the record as orjson writes fastavro's decoding of it, the
    condition under which that holds; the insert fails for a row that does not meet it)."""
    named: dict = {}
    _register(schema, named)
    checks: list[str] = []
    p = walk(schema, "", named, checks)
    checks += [f"isValidUTF8({p})", f"position({p}, {_q(_ESCAPE)}) = 0"]
    return p, " AND ".join(f"({c})" for c in checks)


def strings_ok(schema: dict) -> str:
    """Every string of the record is valid UTF-8 (fastavro refuses the rest: poison), for
    the tables other than `events` (whose payload check covers it)."""
    named: dict = {}
    _register(schema, named)
    out = []
    for f in schema["fields"]:
        node = _resolve(f["type"], named)
        if node == "string" or (isinstance(node, dict) and node.get("type") == "string"):
            out.append(f"isValidUTF8({f['name']})")
        elif "string" in json.dumps(node):   # strings inside: through their JSON (bytes as they are)
            out.append(f"ifNull(isValidUTF8(toJSONString({f['name']})), 1)")
    return " AND ".join(out) or "1"


class FastTopic:
    """One topic's fast path: the envelope's container header, and in ClickHouse a Null-engine
    table of envelope rows with one materialized view per target table (`events` and the
    topic's `tables`), so that a container is parsed once and mapped into all of them in one
    insert. Its deduplication token carries over to every view's insert (ClickHouse derives
    one per view). The names carry a digest of the SQL: a changed mapping or schema gets new
    objects rather than altering the old ones."""

    def __init__(self, topic: str, schema_id: int, schema_json: str, tables: dict[str, list[str]],
                 table_columns: dict[str, list[str]]) -> None:
        schema = json.loads(schema_json)
        if schema.get("type") != "record":
            raise Unsupported("not a record")
        self.topic = topic
        self.header = struct.pack(">bI", 0, schema_id)   # the wire header of its records
        names = {f["name"] for f in schema["fields"]}
        if names & {"_chimera_head", "_chimera_key", "_chimera_trace", "_chimera_tail"} or "event_id" not in names:
            raise Unsupported("no event_id, or field names that clash with the envelope's")
        self.payload, payload_ok = payload_sql(schema)
        envelope = {"type": "record", "name": "ChimeraSinkEnvelope", "namespace": "chimera.sink",
                    "fields": META + schema["fields"] + END}
        buf = io.BytesIO()
        fastavro.writer(buf, fastavro.parse_schema(envelope), [])
        self.ocf_header = buf.getvalue()           # magic, schema, codec null, sync marker
        self.sync = self.ocf_header[-16:]
        # every record's bytes were its own (see the module docstring); event_id set (else
        # the Python path derives one)
        aligned = (f"reinterpretAsUInt64(_chimera_tail) = reinterpretAsUInt64(substring(_chimera_head, 1, 8)) "
                   f"* {MIX_MUL} + {MIX_ADD} AND event_id != ''")
        self.checks = {"events": f"{aligned} AND {payload_ok}",
                       **{t: f"{aligned} AND {strings_ok(schema)}" for t in tables}}
        self.selects = {"events": self.events_select(), **tables}
        self.table_columns = table_columns
        digest = hashlib.sha1(json.dumps([self.ocf_header[:-16].hex(), self.selects, self.checks]).encode())
        self.source = f"chimera.fast_{re.sub(r'[^A-Za-z0-9]', '_', topic)}_{digest.hexdigest()[:10]}"

    def events_select(self) -> list[str]:
        """The `events` row of every record (the columns of COLUMNS['events'])."""
        return [_q(self.topic), "reinterpretAsUInt32(substring(_chimera_head, 17, 4))",
                "reinterpretAsUInt64(substring(_chimera_head, 1, 8))", "event_id", "_chimera_key",
                "fromUnixTimestamp64Milli(reinterpretAsInt64(substring(_chimera_head, 9, 8)))",
                self.payload, "_chimera_trace"]

    def container(self, items: list[bytes]) -> bytes:
        """One Avro object-container file: the header, one block of `items` (envelope records)."""
        data = b"".join(items)
        return b"".join((self.ocf_header, zigzag(len(items)), zigzag(len(data)), data, self.sync))

    def statements(self, columns: str) -> list[str]:
        """The DDL of the source table (`columns`: its ClickHouse columns, as ClickHouse reads
        the envelope schema) and of the views."""
        out = [f"CREATE TABLE IF NOT EXISTS {self.source} ({columns}) ENGINE = Null"]
        for table, exprs in self.selects.items():
            # columns renamed in an outer SELECT: `toString(status) AS status` would be cyclic
            inner = ", ".join(f"{x} AS _c{i}" for i, x in enumerate(exprs))
            outer = ", ".join(f"_c{i} AS `{c}`" for i, c in enumerate(self.table_columns[table]))
            out.append(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.source}_{table} TO chimera.{table} AS "
                       f"SELECT {outer} FROM (SELECT {inner} FROM {self.source} WHERE "
                       f"throwIf(NOT ({self.checks[table]}), 'fast path: a record this path cannot store') = 0)")
        return out

    def drop_stale(self, engine) -> list[str]:
        """Drop this topic's source tables and views of other schemas or mappings (named by
        another digest): left alone, each would go on receiving nothing and its views would
        outlive the mapping they were made for. Returns what was dropped."""
        prefix = self.source.split(".", 1)[1].rsplit("_", 1)[0] + "_"
        rows = engine.query(f"SELECT name, engine FROM system.tables WHERE database = 'chimera' AND "
                            f"startsWith(name, {_q(prefix)}) AND NOT startsWith(name, "
                            f"{_q(self.source.split('.', 1)[1])})", "JSONEachRow").bytes()
        found = [json.loads(line) for line in rows.splitlines() if line.strip()]
        # views first: a source table is dropped once nothing reads from it
        found.sort(key=lambda r: r["engine"] != "MaterializedView")
        for r in found:
            kind = "VIEW" if r["engine"] == "MaterializedView" else "TABLE"
            engine.query(f"DROP {kind} IF EXISTS chimera.`{r['name']}`", "TSV")
        return [r["name"] for r in found]

    def create(self, engine) -> None:
        """Create the source table and the views (idempotent) on a chdb connection."""
        fd, path = tempfile.mkstemp(suffix=".avro", prefix="chimera-envelope-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.ocf_header)
            desc = engine.query(f"DESCRIBE file({_q(path)}, 'Avro') SETTINGS schema_inference_use_cache_for_file = 0",
                                "JSONEachRow").bytes()
        finally:
            os.unlink(path)
        columns = ", ".join(f"`{c['name']}` {c['type']}" for c in map(json.loads, desc.splitlines()))
        for sql in self.statements(columns):
            engine.query(sql, "TSV")

    def insert(self, engine, items: list[bytes], token: str) -> None:
        """One container of `items` into the source table: ClickHouse parses it once and the
        views fill the target tables, side by side (VIEW_SETTINGS); any refused record fails the
        whole insert (each view checks what it writes, so a refused record is in no table; a view
        that had no objection may have written the batch's other rows, which the Python path then
        writes again: the same rows, collapsed by ReplacingMergeTree, exact with FINAL). Through a
        file in memory (/dev/shm where there is one) and `query`: chdb's streaming insert
        (`send_insert`) reports success when a view refuses the rows, and stores nothing."""
        fd, path = tempfile.mkstemp(suffix=".avro", prefix="chimera-sink-", dir=_TMP)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.container(items))
            engine.query(f"INSERT INTO {self.source} SETTINGS insert_deduplication_token = {_q(token)}, "
                         f"{JSON_SETTINGS}, {VIEW_SETTINGS} SELECT * FROM file({_q(path)}, 'Avro') "
                         f"SETTINGS schema_inference_use_cache_for_file = 0", "TSV")
        finally:
            os.unlink(path)


def fast_topic(topic: str, schema_name: str, ids, tables: dict[str, list[str]],
               table_columns: dict[str, list[str]]) -> FastTopic | None:
    """The fast path of a topic for its current schema id, or None where the schema has
    something this path cannot map exactly."""
    schema_id = ids.id_for(schema_name)
    text = ids.schema_json(schema_id) or schemas.expanded(schema_name)
    try:
        return FastTopic(topic, schema_id, text, tables, table_columns)
    except Unsupported:
        return None
