"""The sink runtime the ClickHouse, Neo4j and Chroma sinks share.

One confluent-kafka consumer per sink, in the sink's own consumer group (so a slow or
absent store never slows planning). Records are decoded, checked by the sink's `prepare`,
and gathered in one `SinkBatch` per topic-partition. A batch is flushed, by the sink's
`write(batch)`, when it is full or old enough; its offsets are committed only after the
write succeeded. A write that fails means the store is unavailable: every assigned
partition is paused, the same batch is retried with exponential backoff, and consumption
resumes once it went through. Nothing is dropped and nothing is committed ahead of the
store. Writes are idempotent upserts keyed by `SinkRecord.event_id`, so a batch delivered
twice (a crash between write and commit, a replay) changes nothing.

A sink may take some topics' records undecoded (`Sink.wire`: e.g. ClickHouse decodes the
Avro itself); if the store refuses such a batch, the runner prepares it again the usual way
(decode, `prepare`), which finds and dead-letters the poison, and writes that.

Records that can never be stored (undecodable, or refused by `prepare`) go to
`chimera.sinks.dlq` with the reason and the source in headers (topics/dlq.py's format) and
count as handled: their offsets are committed with the batch they sit in.

Pattern after Quix Streams' `BatchingSink`/`SinkBatch` (batch per topic-partition, flush
then commit, backpressure by pausing), written for a plain confluent-kafka loop.
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from topics.admin import create_topics
from topics import security
from topics.dlq import SOURCE_HEADERS, dlq_headers
from topics.registry import SINKS_DLQ
from topics.serde import SerdeError, serde

log = logging.getLogger(__name__)
_MISSING = object()

RECORDS = Counter("chimera_sink_records_total", "Records written to the store", ["sink", "topic"])
DEAD = Counter("chimera_sink_dead_letters_total", "Records sent to the sinks' DLQ", ["sink", "reason"])
BATCH_SIZE = Histogram("chimera_sink_batch_size", "Records per flushed batch", ["sink"],
                       buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000))
WRITE_SECONDS = Histogram("chimera_sink_write_seconds", "Time of one successful write(batch)", ["sink"],
                          buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
REPREPARED = Counter("chimera_sink_reprepared_batches_total",
                     "Batches of undecoded records the store refused, prepared again in Python", ["sink"])
RETRIES = Counter("chimera_sink_retries_total", "Failed writes retried with backoff", ["sink"])
LAG = Gauge("chimera_sink_lag", "High watermark minus committed position", ["sink", "topic", "partition"])
TOMBSTONES = Counter("chimera_sink_tombstones_total", "Null values with nothing to store (skipped)",
                     ["sink", "topic"])
PAUSED = Gauge("chimera_sink_paused", "1 while the sink waits for its store", ["sink"])


GC_GEN0 = 50_000   # allocations between young collections while a sink runs (see SinkRunner._start)


class PoisonRecord(Exception):
    """A record the store can never take: goes to the DLQ with `reason`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def derived_event_id(topic: str, partition: int, offset: int) -> str:
    """A deterministic id for records without an `event_id` (goals, resources): where it sits."""
    return hashlib.sha1(f"{topic}/{partition}/{offset}".encode()).hexdigest()[:32]


@dataclass(slots=True)
class SinkRecord:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict | None          # decoded Avro value; None for raw topics (dead letters)
    raw: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int

    @property
    def event_id(self) -> str:
        if self.value and self.value.get("event_id"):
            return self.value["event_id"]
        h = self.headers
        if "chimera.dlq.reason" in h and all(k in h for k in SOURCE_HEADERS):
            # a dead letter: the same source record dead-lettered again (a replay) is the same event
            where = "/".join(h[k].decode("utf-8", "replace") for k in SOURCE_HEADERS)
            return derived_event_id(f"{self.topic}|{where}|{h.get('chimera.dlq.sink', b'').decode()}", 0, 0)
        return derived_event_id(self.topic, self.partition, self.offset)


@dataclass
class SinkBatch:
    """The records of one topic-partition waiting for one write; `items` holds what
    `prepare` returned for each (poison records are counted in the offsets, not in items)."""
    topic: str
    partition: int
    start_offset: int
    end_offset: int = -1
    records: list[SinkRecord] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    wired: int = 0    # how many items came from `Sink.wire` (their records are the consumer's messages)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


class Sink(ABC):
    """A store. Subclasses set `name` and `topics` and implement `write`."""

    name: str = "sink"
    topics: tuple[str, ...] = ()
    raw_topics: tuple[str, ...] = ()    # consumed undecoded (dead-letter topics)
    # Topics whose null values (tombstones: "this key is gone", e.g. a resource deleted) reach
    # `prepare` with `value` None; on other topics a tombstone has nothing to store and is
    # counted (chimera_sink_tombstones_total), never dead-lettered as if it were garbage.
    tombstone_topics: tuple[str, ...] = ()
    # Write each batch in a writer thread while the next one is consumed and prepared (the
    # store's client must release the GIL while it writes for this to pay; chdb does).
    # Order and commits are unchanged: one batch in flight at a time, its offsets committed
    # only once its write succeeded, a failed one retried (synchronously, paused) before
    # anything after it.
    overlap_writes: bool = False

    def setup(self) -> None:
        """Connect, create tables/constraints. Raising means 'store not there yet': retried."""

    def prepare(self, record: SinkRecord) -> Any:
        """Turn a record into what `write` needs; raise PoisonRecord for one that can never be stored."""
        return record

    def wire(self, topic: str):
        """None, or a function `(value, key, offset, partition, timestamp_ms, headers)` of a
        record of `topic` as the consumer gives it (bytes, bytes or None, ..., a list of
        (name, bytes) or None), *undecoded*, to what `write` needs, or None to have that record
        decoded and prepared as usual. For stores that decode the wire format themselves: no
        SinkRecord is made for such a record unless the store refuses its batch, which is then
        prepared again as usual (see SinkRunner._unwire)."""
        return None

    @abstractmethod
    def write(self, batch: SinkBatch) -> None:
        """Store the batch idempotently; raise if the store is unavailable (the batch is retried)."""

    def close(self) -> None:
        """Release the store's connections."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a failed write means 'store unavailable' (pause and retry the batch) rather
        than 'the store refuses some record in it' (find it and dead-letter it)."""
        return isinstance(exc, (ConnectionError, TimeoutError, OSError))


class SinkRunner:
    """Consume a sink's topics into its store (see the module docstring)."""

    def __init__(self, sink: Sink, bootstrap: str, *, group: str | None = None, batch_size: int = 1000,
                 batch_age_s: float = 0.5, backoff_s: tuple[float, float] = (0.2, 5.0),
                 dlq_topic: str = SINKS_DLQ.name, consumer_config: dict | None = None,
                 overlap_writes: bool | None = None) -> None:
        self.sink = sink
        self.bootstrap = bootstrap
        self.group = group or f"chimera-sink-{sink.name}"
        self.batch_size = batch_size
        self.batch_age_s = batch_age_s
        self.backoff_min, self.backoff_max = backoff_s
        self.dlq_topic = dlq_topic
        self.consumer_config = consumer_config or {}
        self.batches: dict[tuple[str, int], SinkBatch] = {}
        self._lag_at = 0.0
        self.paused = False
        self.retry_at = 0.0
        self.backoff = self.backoff_min
        self.last_error: BaseException | None = None
        self.committed: dict[tuple[str, int], int] = {}   # next offset to read, as committed
        self.written = 0
        self.dead_letters = 0
        self.retries = 0
        self.reprepared = 0   # batches of undecoded records the store refused (see _unwire)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._dlq_pending = 0
        self.first_record_at: float | None = None   # monotonic time of the first record consumed
        self.ready = threading.Event()   # set once the store is set up and the consumer subscribed
        self._raw = frozenset(sink.raw_topics)
        self._serdes: dict = {}
        self._wires: dict = {}
        self.overlap = sink.overlap_writes if overlap_writes is None else overlap_writes
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: tuple[tuple[str, int], SinkBatch, Future] | None = None   # the batch being written
        self._failed: SinkBatch | None = None   # an overlapped write that failed: retried before anything else

    # ------------------------------------------------------------------ lifecycle

    def _start(self, stop: threading.Event) -> bool:
        names = list(dict.fromkeys([*self.sink.topics, *self.sink.raw_topics, self.dlq_topic]))
        self._raw = frozenset(self.sink.raw_topics)
        self._serdes = {}
        self._wires = {}
        asyncio.run(create_topics(self.bootstrap, names))
        delay = self.backoff_min
        while not stop.is_set():
            try:
                self.sink.setup()
                break
            except Exception as exc:  # noqa: BLE001 - the store is not there yet: wait for it
                log.warning("sink %s: store not ready (%s); retry in %.1fs", self.sink.name, exc, delay)
                self.last_error = exc
                stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
        if stop.is_set():
            return False
        # A sink allocates a dozen objects a record and holds a batch of them until it is
        # written: with the collector's defaults (a young collection every 700 allocations,
        # rescanning what survives) that is ~30-40% of the per-record cost. What exists now
        # (modules, schemas, the store's client) lives as long as the process: frozen out of
        # the collector's sight; and young collections run every GC_GEN0 allocations (never
        # lowered below what the process set). Cycles are still collected.
        gc.collect()
        gc.freeze()
        t0, t1, t2 = gc.get_threshold()
        if t0 and t0 < GC_GEN0:
            gc.set_threshold(GC_GEN0, t1, t2)
        if self.overlap:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"sink-{self.sink.name}-writer")
        self._producer = Producer({**security.confluent(), "bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                                   "acks": "all", "linger.ms": 5})
        self._consumer = Consumer({
            **security.confluent(), "bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": False,
            **self.consumer_config})
        self._consumer.subscribe(list(dict.fromkeys([*self.sink.topics, *self.sink.raw_topics])),
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.ready.set()
        return True

    def not_ready(self) -> str | None:
        """Why this sink cannot store records now (None: it can): its store not set up yet, or
        its partitions paused while a write to the store fails. For /readyz (sinks/service.py)."""
        err = self.last_error
        detail = f" ({type(err).__name__}: {str(err)[:200]})" if err is not None else ""
        if not self.ready.is_set():
            return f"store not set up yet{detail}"
        if self.paused:
            return f"paused, waiting for its store{detail}"
        return None

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until `stop` is set; then flush what can be flushed, commit, and close."""
        stop = stop or threading.Event()
        if not self._start(stop):
            self.sink.close()
            return
        try:
            while not stop.is_set():
                self.step()
            self._flush_all(final=True)
        finally:
            if self._inflight is not None:
                self._settle()
            self._close()

    def step(self, timeout: float = 0.1) -> None:
        """One turn of the loop: retry a failed flush when due, consume, flush what is due."""
        if self._inflight is not None and self._inflight[2].done():
            self._settle()
        now = time.monotonic()
        if self.paused:
            if now >= self.retry_at:
                self._flush_all()
            # paused partitions fetch nothing; polling keeps the group membership alive
        if self._inflight is not None:   # a write in flight: come back soon to commit it
            timeout = min(timeout, 0.005)
        msgs = self._consumer.consume(num_messages=self.batch_size, timeout=timeout)
        self._refresh_lag()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("sink %s: consumer error %s", self.sink.name, err)
                continue
            self._add(m)
        if not self.paused:
            now = time.monotonic()
            for tp, b in list(self.batches.items()):
                if b.end_offset - b.start_offset + 1 >= self.batch_size or now - b.created >= self.batch_age_s:
                    if not self._flush(tp):
                        break

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None   # librdkafka handles go now, not when the runner is collected
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.sink.close()

    # ------------------------------------------------------------------ records

    def _add(self, m) -> None:
        if self.first_record_at is None:
            self.first_record_at = time.monotonic()
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        tp = (topic, partition)
        batch = self.batches.get(tp)
        if batch is None:
            batch = self.batches[tp] = SinkBatch(topic, partition, offset)
        batch.end_offset = offset
        wire = self._wires.get(topic, _MISSING)
        if wire is _MISSING:
            wire = self._wires[topic] = None if topic in self._raw else self.sink.wire(topic)
        if wire is not None:
            item = wire(m.value(), m.key(), offset, partition, m.timestamp()[1], m.headers())
            if item is not None:
                batch.records.append(m)   # a SinkRecord only if it has to be prepared again
                batch.items.append(item)
                batch.wired += 1
                return
        self._prepare(_record(m), batch)

    def _prepare(self, rec: SinkRecord, batch: SinkBatch) -> None:
        """Decode and prepare a record into `batch`, or dead-letter it."""
        topic = rec.topic
        try:
            decode = self._serdes.get(topic, _MISSING)
            if decode is _MISSING:
                decode = self._serdes[topic] = None if topic in self._raw else serde(topic).decode
            if decode is not None and rec.raw is None:
                if topic not in self.sink.tombstone_topics:
                    TOMBSTONES.labels(self.sink.name, topic).inc()
                    return
            elif decode is not None:
                try:
                    rec.value = decode(rec.raw)
                except SerdeError as exc:
                    raise PoisonRecord(exc.reason, exc.detail) from exc
            item = self.sink.prepare(rec)
        except PoisonRecord as exc:
            self._dead_letter(rec, exc.reason, exc.detail)
            return
        batch.records.append(rec)
        batch.items.append(item)

    def _dead_letter(self, rec: SinkRecord, reason: str, detail: str) -> None:
        headers = {**dlq_headers(reason, detail, rec.topic, rec.partition, rec.offset),
                   "chimera.dlq.sink": self.sink.name.encode()}
        self._producer.produce(self.dlq_topic, key=rec.key.encode() if rec.key else None, value=rec.raw,
                               headers=list(headers.items()))
        self._producer.poll(0)
        self._dlq_pending += 1
        self.dead_letters += 1
        DEAD.labels(self.sink.name, reason).inc()
        log.warning("sink %s: %s/%d@%d to %s: %s %s", self.sink.name, rec.topic, rec.partition, rec.offset,
                    self.dlq_topic, reason, detail[:200])

    # ------------------------------------------------------------------ flush and commit

    def _flush_all(self, final: bool = False) -> bool:
        if self._failed is not None:   # an overlapped write that failed goes first, as it was
            if not self._write(self._failed):
                return False
            batch, self._failed = self._failed, None
            self._written(batch)
        for tp in list(self.batches):
            if not self._flush(tp, sync=final):
                return False
        return True

    def _flush(self, tp: tuple[str, int], sync: bool = False) -> bool:
        """Write one batch, then commit past it. False (and paused, retry scheduled) on failure.
        With overlapped writes the batch goes to the writer thread and True means 'handed over':
        it is committed by `_settle` once written, or by the next `_flush`, which hands its own
        batch to the writer first: the commit's round trip to the broker overlaps the next write."""
        done = None
        if self._inflight is not None:   # one batch in flight, in order
            done = self._await()
            if done is None:
                return False
        batch = self.batches[tp]
        if self.overlap and batch.items and not sync and not self.paused and self._failed is None:
            del self.batches[tp]
            self._inflight = (tp, batch, self._writer.submit(self._timed_write, batch))
            if done is not None:
                self._written(done)
            return True
        if done is not None:
            self._written(done)
        if not self._write(batch):
            return False
        del self.batches[tp]
        self._written(batch)
        return True

    def _timed_write(self, batch: SinkBatch) -> float:
        t0 = time.perf_counter()
        self.sink.write(batch)
        return time.perf_counter() - t0

    def _settle(self) -> bool:
        """Wait for the batch in flight; commit past it once written, else keep it for the retry."""
        batch = self._await()
        if batch is None:
            return False
        self._written(batch)
        return True

    def _await(self) -> SinkBatch | None:
        """Wait for the batch in flight: the batch once written (not committed yet), or None
        (kept for the retry, backing off)."""
        tp, batch, fut = self._inflight
        self._inflight = None
        exc = fut.exception()
        try:
            if exc is not None:
                if self.sink.is_transient(exc):
                    raise exc
                self._reject(batch, exc)
            else:
                self._observe(batch, fut.result())
            self._ack_dead_letters()
        except Exception as exc2:  # noqa: BLE001 - the store (or broker) is unavailable: back off
            self._failed = batch
            self._backpressure(exc2)
            return None
        return batch

    def _write(self, batch: SinkBatch) -> bool:
        """Write one batch here and now; False (paused, retry scheduled) when the store is unavailable."""
        try:
            if batch.items:
                t0 = time.perf_counter()
                try:
                    self.sink.write(batch)
                except Exception as exc:  # noqa: BLE001 - classified below
                    if self.sink.is_transient(exc):
                        raise
                    self._reject(batch, exc)
                self._observe(batch, time.perf_counter() - t0)
            self._ack_dead_letters()
        except Exception as exc:  # noqa: BLE001 - the store (or broker) is unavailable: back off
            self._backpressure(exc)
            return False
        return True

    def _observe(self, batch: SinkBatch, seconds: float) -> None:
        name = self.sink.name
        WRITE_SECONDS.labels(name).observe(seconds)
        BATCH_SIZE.labels(name).observe(len(batch.items))
        RECORDS.labels(name, batch.topic).inc(len(batch.items))

    def _ack_dead_letters(self) -> None:
        if self._dlq_pending:  # dead letters acknowledged before the offsets move past them
            if self._producer.flush(10) > 0:
                raise ConnectionError("dead letters not acknowledged by the broker")
            self._dlq_pending = 0

    def _written(self, batch: SinkBatch) -> None:
        self.written += len(batch.items)
        self._commit(batch)
        if self.paused and not self.batches and self._failed is None and self._inflight is None:
            self._resume()

    def _unwire(self, batch: SinkBatch) -> None:
        """Prepare the batch's undecoded (`Sink.wire`) records again the usual way, in place:
        decoded, `prepare`d, the poison dead-lettered with its reason."""
        self.reprepared += 1
        REPREPARED.labels(self.sink.name).inc()
        records, items = batch.records, batch.items
        batch.records, batch.items, batch.wired = [], [], 0
        for rec, item in zip(records, items):
            if not isinstance(rec, SinkRecord):
                self._prepare(_record(rec), batch)
            else:
                batch.records.append(rec)
                batch.items.append(item)

    def _refusal(self, batch: SinkBatch) -> BaseException | None:
        """Write `batch`: None when the store took it, its refusal when it refused the content; a
        transient error (the store is away) is raised, to back off."""
        try:
            self.sink.write(batch)
            return None
        except Exception as e:  # noqa: BLE001
            if self.sink.is_transient(e):
                raise
            return e

    def _reject(self, batch: SinkBatch, exc: BaseException) -> None:
        """The store refused the batch for its content. A batch with undecoded records is first
        prepared again the usual way (`_unwire`) and written once more. Then: write it in halves
        until the records it refuses are alone, and dead-letter those ('store_rejected'). Should
        it refuse every record one by one, the store is treated as unavailable instead (raised:
        back off)."""
        if batch.wired:
            log.info("sink %s: %s/%d@%d-%d refused undecoded (%s); preparing it again in Python",
                     self.sink.name, batch.topic, batch.partition, batch.start_offset, batch.end_offset,
                     str(exc)[:200])
            self._unwire(batch)
            if not batch.items:
                return
            exc = self._refusal(batch)
            if exc is None:
                return
        refused: list[tuple[SinkRecord, BaseException]] = []

        def attempt(lo: int, hi: int, known: BaseException | None) -> None:
            if known is None:
                part = SinkBatch(batch.topic, batch.partition, batch.records[lo].offset, batch.records[hi - 1].offset,
                                 batch.records[lo:hi], batch.items[lo:hi])
                known = self._refusal(part)
                if known is None:
                    return
            if hi - lo == 1:
                refused.append((batch.records[lo], known))
                return
            mid = (lo + hi) // 2
            attempt(lo, mid, None)
            attempt(mid, hi, None)

        attempt(0, len(batch.items), exc)
        if len(refused) == len(batch.items) > 1:
            raise ConnectionError(f"the store refused every record of the batch: {exc}") from exc
        for rec, why in refused:
            self._dead_letter(rec, "store_rejected", f"{type(why).__name__}: {why}")

    def _commit(self, batch: SinkBatch) -> None:
        nxt = batch.end_offset + 1
        try:
            self._consumer.commit(offsets=[TopicPartition(batch.topic, batch.partition, nxt)], asynchronous=False)
            self.committed[(batch.topic, batch.partition)] = nxt
        except Exception as exc:  # noqa: BLE001 - written idempotently: a re-delivery is harmless
            log.warning("sink %s: commit of %s/%d@%d failed: %s", self.sink.name, batch.topic, batch.partition,
                        nxt, exc)
        self._set_lag(batch.topic, batch.partition)

    def _set_lag(self, topic: str, partition: int) -> None:
        """chimera_sink_lag: the offsets after the committed one, except when what is left are
        only transaction markers (the executors' feedback ends in them): the consumer's position
        is past them and nothing of the partition waits to be written, so the sink is caught up."""
        committed = self.committed.get((topic, partition))
        if committed is None:
            return
        try:
            tp = TopicPartition(topic, partition)
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return
            lag = max(high - committed, 0)
            if lag and (topic, partition) not in self.batches and self._inflight is None:
                position = self._consumer.position([tp])[0].offset
                if position >= high:
                    lag = 0
            LAG.labels(self.sink.name, topic, str(partition)).set(lag)
        except Exception:  # noqa: BLE001 - metrics only
            pass

    def _refresh_lag(self) -> None:
        """Once a second: a partition's lag also changes when nothing is written (markers read)."""
        now = time.monotonic()
        if now - self._lag_at < 1.0:
            return
        self._lag_at = now
        for topic, partition in list(self.committed):
            self._set_lag(topic, partition)

    def _backpressure(self, exc: BaseException) -> None:
        self.last_error = exc
        self.retries += 1
        RETRIES.labels(self.sink.name).inc()
        if not self.paused:
            self._consumer.pause(self._consumer.assignment())
            self.paused = True
            PAUSED.labels(self.sink.name).set(1)
            self.backoff = self.backoff_min
        log.warning("sink %s: write failed (%s: %s); paused, retry in %.1fs", self.sink.name,
                    type(exc).__name__, str(exc)[:300], self.backoff)
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, self.backoff_max)

    def _resume(self) -> None:
        self._consumer.resume(self._consumer.assignment())
        self.paused = False
        PAUSED.labels(self.sink.name).set(0)
        self.backoff = self.backoff_min
        log.info("sink %s: store back; resumed", self.sink.name)

    # ------------------------------------------------------------------ rebalance

    def _on_revoke(self, consumer, partitions: Iterable[TopicPartition]) -> None:
        """Flush what we hold for partitions we lose; what cannot be written stays uncommitted
        and is re-delivered to their next owner."""
        if self._inflight is not None:
            self._settle()
        gone = {(p.topic, p.partition) for p in partitions}
        if self._failed is not None and (self._failed.topic, self._failed.partition) in gone:
            self._failed = None   # not committed: re-delivered to the next owner
        for tp in gone:
            if tp in self.batches and not self.paused:
                self._flush(tp, sync=True)
            self.batches.pop(tp, None)
        if self.paused and not self.batches and self._failed is None:
            self.paused = False
            PAUSED.labels(self.sink.name).set(0)

    def _on_lost(self, consumer, partitions) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        if self._inflight is not None and self._inflight[0] in gone:
            self._inflight[2].exception()   # let it finish; not committed (the partition is gone)
            self._inflight = None
        if self._failed is not None and (self._failed.topic, self._failed.partition) in gone:
            self._failed = None
        for p in partitions:
            self.batches.pop((p.topic, p.partition), None)


def _record(m) -> SinkRecord:
    """The SinkRecord of a consumed message (value not decoded yet)."""
    h = m.headers()
    raw_key = m.key()
    return SinkRecord(m.topic(), m.partition(), m.offset(), raw_key.decode("utf-8", "replace") if raw_key else None,
                      None, m.value(), {k: (v or b"") for k, v in h} if h else {}, m.timestamp()[1])


def run_in_thread(runner: SinkRunner, name: str | None = None) -> tuple[threading.Thread, threading.Event]:
    """Start `runner.run` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    t = threading.Thread(target=runner.run, args=(stop,), name=name or f"sink-{runner.sink.name}", daemon=True)
    t.start()
    return t, stop
