"""Follows the plan topics into the API's Store with a confluent-kafka consumer (a thread).

Why the API keeps its own view instead of asking the planner workers: a plan's state lives
in one worker's RocksDB partition, encoded for the planner and moved on every rebalance; the
workers serve no reads (Faust's web server is off) and must not slow down for readers. The
topics are the contract: a view folded from them lets the API scale, restart and answer
while workers rebalance, without coupling it to the planner's internal state format.
No consumer group: every API process reads every partition from the beginning (retention is
four weeks) and is `ready` once it has caught up with the ends it saw at start.
"""
from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from api.store import FOLLOWED, Store
from topics.serde import SerdeError, serde

log = logging.getLogger("chimera.api.view")


class View:
    def __init__(self, bootstrap: str, store: Store | None = None, topics: tuple[str, ...] = FOLLOWED,
                 kafka_config: dict | None = None) -> None:
        self.bootstrap = bootstrap
        self.store = store or Store()
        self.topics = topics
        self.kafka_config = kafka_config or {}
        self.ready = threading.Event()
        self.error: str | None = None          # the last broker error, cleared by the next record or poll
        self.lag = 0
        self.records = 0
        self.decode_errors = 0
        self.last_poll = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    def start(self) -> "View":
        self._thread = threading.Thread(target=self._run, name="api-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _on_error(self, err) -> None:
        self.error = str(err)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:   # the broker went away during assignment: try again
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("view follower restarting: %s", self.error)
                self._stop.wait(1.0)

    def _follow(self) -> None:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "chimera-api-view-unused",
                      "enable.auto.commit": False, "enable.partition.eof": False, "error_cb": self._on_error,
                      "socket.connection.setup.timeout.ms": 5000, **self.kafka_config})
        self._consumer = c
        try:
            md = c.list_topics(timeout=10)
            tps = [TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics if t in md.topics
                   for p in sorted(md.topics[t].partitions)]
            ends = {}
            for tp in tps:
                lo, hi = c.get_watermark_offsets(tp, timeout=10)
                ends[(tp.topic, tp.partition)] = hi
            c.assign(tps)
            position = {k: 0 for k in ends}
            highs = dict(ends)
            pending = {k for k, hi in ends.items() if hi > 0}
            if not pending:
                self.ready.set()
            last_lag = 0.0
            while not self._stop.is_set():
                msgs = c.consume(500, 0.2)
                self.last_poll = time.monotonic()
                for m in msgs:
                    if m.error():
                        self.error = str(m.error())
                        continue
                    self.error = None
                    k = (m.topic(), m.partition())
                    position[k] = m.offset() + 1
                    if k in pending and position[k] >= ends[k]:
                        pending.discard(k)
                        if not pending:
                            self.ready.set()
                    self._apply(m)
                if time.monotonic() - last_lag > 2.0:
                    last_lag = time.monotonic()
                    self._measure_lag(c, tps, position, highs)
                    if pending:
                        pending -= {k for k in pending if position[k] >= ends[k]}
                        if not pending:
                            self.ready.set()
        finally:
            c.close()

    def _measure_lag(self, c: Consumer, tps, position, highs: dict) -> None:
        """Lag from the high watermarks the fetches bring back (librdkafka caches them): no
        request to the broker. Asking it per partition (`cached=False`) took 1-2 s each on a busy
        broker, 15-30 s for the followed partitions, with the consumer loop stuck meanwhile: the
        view caught up that much later and the API stayed unready (the demo's 60 s wait)."""
        for tp in tps:
            _, hi = c.get_watermark_offsets(tp, cached=True)
            if hi is not None and hi >= 0:
                highs[(tp.topic, tp.partition)] = hi
        # the consumer's own position, past transaction markers (the executors write feedback in
        # transactions): the last record's offset + 1 stays one marker short of the end for ever
        for tp in c.position([TopicPartition(tp.topic, tp.partition) for tp in tps]):
            k = (tp.topic, tp.partition)
            if tp.offset is not None and tp.offset > position.get(k, 0):
                position[k] = tp.offset
        self.lag = sum(max(0, highs.get(k, 0) - pos) for k, pos in position.items())

    def _apply(self, m) -> None:
        self.records += 1
        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or ())}
        try:
            value = serde(m.topic()).decode(m.value()) if m.value() is not None else None
        except SerdeError:
            self.decode_errors += 1
            return
        key = m.key().decode("utf-8", "replace") if m.key() else None
        self.store.apply(m.topic(), key, value, headers)
