"""ClickHouse sink: every topic into a raw `events` table, plus typed tables (schema.sql).

Local default: clickhouse-connect on `chdb://<data dir>` (ClickHouse's engine in this
process); `CLICKHOUSE_URL` (http://user:pass@host:8123/) points the same code at a server.

Readers while the sink writes. chdb lets one process own a data folder (a second gets
"Cannot lock file"), so the process that runs the ClickHouse sink is the folder's owner
and serves reads for everyone else: `serve_reads()` starts a small loopback HTTP endpoint
(POST /query {"sql", "parameters"} -> {"columns", "rows"}) in a thread of the owner and
writes its address to `<data dir>/reader.json`. `reader(data_dir)` gives any caller
(queries, reports, training, the API, tests) the right way in: the server when
CLICKHOUSE_URL is set, the owner's endpoint when one is alive, else chdb opened directly
(nobody owns the folder). Inside the owner process, `ClickHouseStore.query` shares the engine.

Two ways in for records. The Python path decodes each record (fastavro) and turns it into
rows by table (`rows_for`), inserted through clickhouse-connect. The fast path, for the
high-volume execution.feedback on chdb, hands ClickHouse the Avro bodies undecoded and maps
them in SQL (`FAST_TABLES`, sinks/clickhouse_avro.py); a batch ClickHouse refuses is
prepared again through the Python path, which dead-letters the poison. A test keeps the two
paths' rows identical.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from urllib import request as urlrequest
from urllib.error import URLError

import orjson

from sinks import clickhouse_avro as avro
from sinks.base import PoisonRecord, Sink, SinkBatch, SinkRecord
from sinks.loopback import LoopbackServer
from streams.settings import load_stores
from topics import registry as T, tracing
from topics.serde import serde

log = logging.getLogger(__name__)

SCHEMA_SQL = Path(__file__).resolve().parent.parent / "infra" / "clickhouse" / "schema.sql"


def default_dir() -> Path:
    """The chdb folder when none is given: [stores] dir/clickhouse (streams/settings.py)."""
    return load_stores().clickhouse_dir


def server_url() -> str:
    """A ClickHouse server to use instead of chdb ([stores] clickhouse_url, CLICKHOUSE_URL), or ""."""
    return load_stores().clickhouse_url

COLUMNS = {
    "events": ["topic", "partition", "offset", "event_id", "key", "ts", "payload", "trace_id"],
    "goals": ["goal_id", "event_id", "title", "description", "domain", "priority", "objectives", "deadline_ms",
              "budget", "max_parallelism", "submitted_by", "created_at", "version"],
    "plans": ["plan_id", "plan_version", "event_id", "goal_id", "source", "strategy", "approval", "schedule_method",
              "makespan_hours", "lower_bound_hours", "previous_makespan_hours", "cost_total", "currency",
              "cost_by_resource", "task_count", "risk_count", "progress_pct", "variance_hours", "created_at",
              "version", "status", "cost_estimate"],
    "tasks": ["plan_id", "plan_version", "task_id", "name", "phase", "component", "depends_on", "optimistic_hours",
              "most_likely_hours", "pessimistic_hours", "start_hours", "finish_hours", "slack_hours", "critical",
              "capabilities", "created_at", "version"],
    "allocations": ["plan_id", "plan_version", "task_id", "resource", "amount", "start_hours", "finish_hours",
                    "created_at", "version"],
    "risks": ["plan_id", "plan_version", "risk_id", "event_id", "category", "severity", "title", "probability",
              "impact", "score", "raised_at", "version"],
    "assignments": ["event_id", "plan_id", "goal_id", "plan_version", "task_id", "assigned_to", "planned_hours",
                    "assigned_at"],
    "feedback": ["event_id", "plan_id", "task_id", "status", "progress_pct", "actual_hours", "message",
                 "reported_at"],
    "resources": ["resource_id", "kind", "capacities", "capabilities", "available", "hourly_rate", "updated_at",
                  "version"],
    "dead_letters": ["dlq_topic", "source_topic", "source_partition", "source_offset", "sink", "reason", "detail",
                     "ts"],
}

SOURCE_TOPICS = (T.GOALS_CREATED.name, T.RESOURCES_AVAILABILITY.name, T.EXECUTION_FEEDBACK.name,
                 T.PLANS_APPROVALS.name, T.PLANS_CREATED.name, T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name,
                 T.RISKS_ALERTS.name)
DLQ_TOPICS = tuple(t.dlq for t in T.TOPICS if t.has_dlq) + (T.SINKS_DLQ.name,)


_FEEDBACK = T.EXECUTION_FEEDBACK.name

# The fast path's SQL mapping (sinks/clickhouse_avro.py): per topic, the typed tables its
# records go to, as expressions over the Avro fields, in COLUMNS order (the `events` row is
# the same for every topic: FastTopic.events_select). Must give what rows_for gives: tested.
FAST_TABLES = {
    _FEEDBACK: {"feedback": ["event_id", "plan_id", "task_id", "toString(status)", "progress_pct", "actual_hours",
                             "message", "fromUnixTimestamp64Milli(reported_at_ms)"]},
}


def _dt(ms: int | None) -> int:
    """DateTime64(3) columns take epoch milliseconds as they are (no datetime objects: cheaper)."""
    return ms or 0


def schema_statements() -> list[str]:
    text = "\n".join(line for line in SCHEMA_SQL.read_text().splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def get_client(data_dir: Path | str | None = None):
    """clickhouse-connect on CLICKHOUSE_URL when set, else on chdb over `data_dir`."""
    import clickhouse_connect

    url = server_url()
    if url:
        return clickhouse_connect.get_client(dsn=url)
    path = Path(data_dir or default_dir()).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=f"chdb://{path}")


# ----------------------------------------------------------------------------- rows

def _plan_rows(rows: dict, plan: dict, *, event_id: str, source: str, version: int, progress: float = 0.0,
               variance: float = 0.0, previous_makespan: float | None = None, status: str = "",
               cost_estimate: float = 0.0) -> None:
    pid, pv, created = plan["plan_id"], plan["version"], _dt(plan["created_at_ms"])
    rows["plans"].append((pid, pv, event_id, plan["goal_id"], source, plan["strategy"], plan["approval"],
                          plan["schedule_method"], plan["makespan_hours"], plan["lower_bound_hours"], previous_makespan,
                          plan["cost"]["total"], plan["cost"]["currency"], dict(plan["cost"]["by_resource"]),
                          len(plan["tasks"]), len(plan["risks"]), progress, variance, created, version, status,
                          cost_estimate))
    for t in plan["tasks"]:
        e = t["estimate"]
        rows["tasks"].append((pid, pv, t["task_id"], t["name"], t["phase"], t["component"], list(t["depends_on"]),
                              e["optimistic"], e["most_likely"], e["pessimistic"], t["start_hours"],
                              t["finish_hours"], t["slack_hours"], int(t["critical"]), list(t["capabilities"]),
                              created, version))
        for res, amount in t["resources"].items():
            rows["allocations"].append((pid, pv, t["task_id"], res, amount, t["start_hours"], t["finish_hours"],
                                        created, version))
    for r in plan["risks"]:
        rows["risks"].append(_risk_row(pid, pv, r, event_id, created, version))


def _risk_row(pid: str, pv: int, r: dict, event_id: str, at: int, version: int) -> tuple:
    return (pid, pv, r["risk_id"], event_id, r["category"], r["severity"], r["title"], r["probability"],
            r["impact"], r["score"], at, version)


def _trace_id(headers: dict[str, bytes]) -> str:
    """The W3C trace id of the record's `traceparent` header ("" without one): an event in
    ClickHouse is found by the trace that produced its goal, as in the workers' logs."""
    parent = headers.get(tracing.HEADER) if headers else None
    return tracing.trace_id_of(parent.decode("ascii", "replace")) if parent else ""


def rows_for(rec: SinkRecord) -> dict[str, list[tuple]]:
    """The rows one record becomes, by table (only the tables it touches). Raises PoisonRecord
    for a record that cannot be stored."""
    ts = _dt(rec.timestamp_ms)
    v = rec.value
    if rec.topic in DLQ_TOPICS:
        rows: dict[str, list[tuple]] = {"events": [], "dead_letters": []}
        h = {k: val.decode("utf-8", "replace") for k, val in rec.headers.items()}
        rows["dead_letters"].append((rec.topic, h.get("chimera.source.topic", rec.topic[:-4]),
                                     int(h.get("chimera.source.partition", -1)),
                                     int(h.get("chimera.source.offset", -1)), h.get("chimera.dlq.sink", ""),
                                     h.get("chimera.dlq.reason", "unknown"), h.get("chimera.dlq.detail", ""), ts))
        payload = json.dumps({"raw": (rec.raw or b"").decode("utf-8", "replace"), "headers": h}).encode()
        rows["events"].append((rec.topic, rec.partition, rec.offset, rec.event_id, rec.key or "", ts, payload,
                               _trace_id(rec.headers)))
        return rows
    version = ts
    topic = rec.topic
    # payload: the value as JSON bytes (a String column takes bytes as they are: no str round trip)
    event = (topic, rec.partition, rec.offset, v.get("event_id") or rec.event_id, rec.key or "", ts,
             orjson.dumps(v, default=str), _trace_id(rec.headers))
    try:
        if topic == _FEEDBACK:   # the most frequent record first
            return {"events": [event], "feedback": [(v["event_id"], v["plan_id"], v["task_id"], v["status"],
                                                     v["progress_pct"], v["actual_hours"], v["message"],
                                                     v["reported_at_ms"] or 0)]}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PoisonRecord("unstorable", f"{topic}: {type(exc).__name__}: {exc}") from exc
    rows = {"events": [event]}
    try:
        if rec.topic == T.GOALS_CREATED.name:
            c = v["constraints"]
            rows["goals"] = []
            rows["goals"].append((v["goal_id"], rec.event_id, v["title"], v["description"], v["domain"], v["priority"],
                                  list(v["objectives"]), c["deadline_ms"], c["budget"], c["max_parallelism"],
                                  v["submitted_by"], _dt(v["created_at_ms"]), version))
        elif rec.topic == T.PLANS_CREATED.name:
            rows.update(plans=[], tasks=[], allocations=[], risks=[])
            _plan_rows(rows, v, event_id=v["event_id"], source="created", version=version)
        elif rec.topic == T.PLANS_UPDATED.name:
            rows.update(plans=[], tasks=[], allocations=[], risks=[])
            _plan_rows(rows, v["plan"], event_id=v["event_id"], source="updated", version=version,
                       progress=v["progress_pct"], variance=v["variance_hours"],
                       previous_makespan=v["previous_makespan_hours"], status=v["status"],
                       cost_estimate=v["cost_estimate"])
        elif rec.topic == T.TASKS_ASSIGNED.name:
            t = v["task"]
            rows["assignments"] = []
            rows["assignments"].append((v["event_id"], v["plan_id"], v["goal_id"], v["plan_version"], t["task_id"],
                                        v["assigned_to"], t["finish_hours"] - t["start_hours"],
                                        _dt(v["assigned_at_ms"])))
        elif rec.topic == T.RISKS_ALERTS.name:
            rows["risks"] = [_risk_row(v["plan_id"], v["plan_version"], v["risk"], v["event_id"],
                                       _dt(v["raised_at_ms"]), version)]
        elif rec.topic == T.RESOURCES_AVAILABILITY.name:
            rows["resources"] = []
            rows["resources"].append((v["resource_id"], v["kind"], dict(v["capacities"]), list(v["capabilities"]),
                                      int(v["available"]), v["hourly_rate"], _dt(v["updated_at_ms"]), version))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PoisonRecord("unstorable", f"{rec.topic}: {type(exc).__name__}: {exc}") from exc
    return rows


# ----------------------------------------------------------------------------- store and sink

class ClickHouseStore:
    """The tables, created once; batched inserts with deduplication tokens; queries."""

    def __init__(self, data_dir: Path | str | None = None, client=None) -> None:
        self.data_dir = Path(data_dir or default_dir()).resolve()
        self.client = client
        self.lock = threading.Lock()
        self.types: dict[str, list] = {}   # table -> its COLUMNS' ClickHouse types, read once
        self.engine = None   # chdb's own connection to the engine the client is on (the fast path's)

    def apply_schema(self) -> None:
        """infra/clickhouse/schema.sql: every statement CREATE / ADD COLUMN IF NOT EXISTS."""
        for stmt in schema_statements():
            self.client.command(stmt)

    def setup(self) -> None:
        if self.client is None:
            self.client = get_client(self.data_dir)
        self.apply_schema()
        self.types = {}
        if self.engine is None and type(self.client).__name__ == "ChdbClient":
            # another handle on the same engine (chdb allows many): its query() runs an
            # INSERT ... SELECT FROM file() as it is, which clickhouse-connect has no call for
            import chdb
            from clickhouse_connect.driver._chdbclient import build_connection_string

            self.engine = chdb.connect(build_connection_string(self.client.path, None))

    def insert_avro(self, fast: "avro.FastTopic", items: list[bytes], token: str) -> None:
        """Insert envelope records (sinks/clickhouse_avro.py): ClickHouse decodes them and maps
        them into `events` and the topic's tables (chdb only)."""
        with self.lock:
            fast.insert(self.engine, items, token)

    def _types(self, table: str) -> list:
        """The column types of COLUMNS[table], read once: clickhouse-connect otherwise runs a
        DESCRIBE TABLE before every insert (a whole extra query per table per batch)."""
        got = self.types.get(table)
        if got is None:
            from clickhouse_connect.datatypes.registry import get_from_name

            res = self.client.query(f"DESCRIBE TABLE chimera.{table}")
            by_name = {r[0]: r[1] for r in res.result_rows}
            got = self.types[table] = [get_from_name(by_name[c]) for c in COLUMNS[table]]
        return got

    def insert(self, table: str, rows: list[tuple], token: str | None = None) -> None:
        """Insert rows (tuples in COLUMNS[table] order), column-oriented: one transpose in C
        (zip) instead of clickhouse-connect's per-row Python transposition (~1.8x faster)."""
        settings = {"insert_deduplication_token": token} if token else None
        columns = list(zip(*rows))
        with self.lock:
            self.client.insert(f"chimera.{table}", columns, column_names=COLUMNS[table], settings=settings,
                               column_types=self._types(table), column_oriented=True)

    def query(self, sql: str, parameters: dict | None = None) -> tuple[list[str], list[tuple]]:
        with self.lock:
            res = self.client.query(sql, parameters=parameters or {})
        return list(res.column_names), [tuple(r) for r in res.result_rows]

    def count(self, table: str, final: bool = True) -> int:
        return self.query(f"SELECT count() FROM chimera.{table}{' FINAL' if final else ''}")[1][0][0]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self.client is not None:
            self.client.close()
            self.client = None


class ClickHouseSink(Sink):
    name = "clickhouse"
    topics = SOURCE_TOPICS
    raw_topics = DLQ_TOPICS
    overlap_writes = True   # chdb (and the HTTP client) write without the GIL: decode the next batch meanwhile

    def __init__(self, data_dir: Path | str | None = None, store: ClickHouseStore | None = None,
                 serve: bool = False, fast: bool = True) -> None:
        self.store = store or ClickHouseStore(data_dir)
        self.serve = serve
        self.fast = fast   # False: every record through the Python path (rows_for)
        self._server = None
        self._fast: dict[str, avro.FastTopic | None] = {}

    def wire(self, topic: str):
        """The fast path's preparer for `topic` (None: the Python path): a record written with
        the topic's current schema becomes its envelope record; any other (older schema ids,
        bad headers: the Python path decodes or dead-letters them) returns None."""
        fast = self._fast.get(topic) if self.fast else None
        if fast is None:
            return None
        header, head, tail, lengths, zigzag = fast.header, avro.HEAD.pack, avro.tail, avro.LENGTHS, avro.zigzag
        no_trace = lengths[0]

        def envelope(raw, key, offset, partition, timestamp_ms, headers) -> bytes | None:
            if raw is None or not raw.startswith(header):
                return None
            if key is None:
                key = b""
            elif not key.isascii():   # as the Python path has it: decoded with replacement, encoded
                key = key.decode("utf-8", "replace").encode()
            if headers:
                t = _trace_id({k: (v or b"") for k, v in headers}).encode()
                trace = (lengths[len(t)] if len(t) < 4096 else zigzag(len(t))) + t
            else:
                trace = no_trace
            return b"".join((head(offset, timestamp_ms or 0, partition),
                             lengths[len(key)] if len(key) < 4096 else zigzag(len(key)), key, trace,
                             memoryview(raw)[5:], tail(offset)))
        return envelope

    def setup(self) -> None:
        self.store.setup()
        self._fast = {}
        if self.fast and self.store.engine is not None:
            for topic, tables in FAST_TABLES.items():
                s = serde(topic)
                fast = avro.fast_topic(topic, s.schema_name, s.ids, tables, COLUMNS)
                if fast is None:
                    continue
                try:
                    with self.store.lock:
                        fast.create(self.store.engine)
                        dropped = fast.drop_stale(self.store.engine)
                    if dropped:
                        log.info("clickhouse: dropped the fast path tables of an older schema or mapping: %s",
                                 ", ".join(dropped))
                except Exception as exc:  # noqa: BLE001 - the Python path stores it all the same
                    log.warning("clickhouse: no fast path for %s (%s); records take the Python path", topic, exc)
                    continue
                self._fast[topic] = fast
        if self.serve and self._server is None and not server_url():
            self._server = serve_reads(self.store)

    def prepare(self, record: SinkRecord) -> dict[str, list[tuple]]:
        return rows_for(record)

    def write(self, batch: SinkBatch) -> None:
        span = f"{batch.topic}:{batch.partition}:{batch.start_offset}-{batch.end_offset}"
        items = batch.items
        if batch.wired:
            if batch.wired == len(items):
                wired, items = items, ()
            else:
                wired = [i for i in items if type(i) is bytes]
                items = [i for i in items if type(i) is not bytes]
            # its own tokens: a batch may also have records that took the Python path
            self.store.insert_avro(self._fast[batch.topic], wired, f"{span}:avro")
        tables: dict[str, list[tuple]] = {}
        for rows in items:
            for t, r in rows.items():
                if r:
                    got = tables.get(t)
                    if got is None:
                        tables[t] = list(r)
                    else:
                        got.extend(r)
        for t, r in tables.items():
            if r:
                self.store.insert(t, r, token=f"{t}:{span}")

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.store.close()


# ----------------------------------------------------------------------------- readers

def serve_reads(store: ClickHouseStore) -> LoopbackServer:
    """Serve read queries on the owner's engine from a loopback port (see the module docstring)."""
    def answer(body: dict) -> dict:
        cols, rows = store.query(body["sql"], body.get("parameters") or {})
        return {"columns": cols, "rows": rows}

    return LoopbackServer(answer, store.data_dir / "reader.json", "/query", "chdb-reader").start()


class RemoteReader:
    """Queries through the owning process's read endpoint."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, sql: str, parameters: dict | None = None) -> tuple[list[str], list[tuple]]:
        req = urlrequest.Request(self.url, data=json.dumps({"sql": sql, "parameters": parameters or {}}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urlrequest.urlopen(req, timeout=60) as resp:
                body = json.loads(resp.read())
        except URLError as exc:
            if hasattr(exc, "read"):
                raise RuntimeError(json.loads(exc.read()).get("error", str(exc))) from exc
            raise
        return body["columns"], [tuple(r) for r in body["rows"]]

    def close(self) -> None:
        pass


def reader(data_dir: Path | str | None = None):
    """A read-only way into the analytics data that never disturbs the writer (see the module docstring)."""
    if server_url():
        store = ClickHouseStore(data_dir)
        store.client = get_client()
        return store
    path = Path(data_dir or default_dir()).resolve()
    marker = path / "reader.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("pid") == os.getpid():
            pass  # we are the owner: open the shared engine below
        elif _alive(info.get("pid")):
            return RemoteReader(info["url"])
    store = ClickHouseStore(path)
    store.client = get_client(path)
    # nobody writes it now: bring a folder an older sink wrote up to this schema first (every
    # statement is CREATE / ADD COLUMN IF NOT EXISTS), or queries of new columns fail on it; a
    # folder no sink ever wrote stays as it is (a reader creates no store)
    if store.client.command("EXISTS TABLE chimera.plans") in (1, "1"):
        store.apply_schema()
    return store


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False
