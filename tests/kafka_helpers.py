"""Reading topics in tests: wait for records that match, with a deadline."""
from __future__ import annotations

import asyncio
import socket
import time

from streams import client


def collect(bootstrap: str, topic: str, match, *, count: int, timeout: float = 90.0, settle: float = 0.0):
    """Records of `topic` for which match(record) holds; waits until `count` arrived (then
    `settle` more seconds, to catch extras that must not be there) or the timeout."""
    found: list = []
    reached: list[float] = []

    def done() -> bool:
        if len(found) >= count and not reached:
            reached.append(time.monotonic())
        return bool(reached) and time.monotonic() - reached[0] >= settle

    async def go():
        async for rec in client.read(bootstrap, topic, deadline_s=timeout, done=done):
            if _matches(match, rec):
                found.append(rec)
        return found
    return asyncio.run(go())


def held(bootstrap: str, topic: str, match, *, settle: float = 1.0) -> list:
    """The records of `topic` for which match(record) holds, read up to the ends the topic has
    `settle` seconds from now (what it holds, not a wait for what may come: no timeout)."""
    from confluent_kafka import Consumer, TopicPartition
    from topics.serde import serde
    time.sleep(settle)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests-held", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts if ends[p] > 0])
        found, deadline = [], time.monotonic() + 60
        while True:
            pos = {tp.partition: tp.offset for tp in c.position([TopicPartition(topic, p) for p in parts])}
            if all(ends[p] == 0 or pos[p] >= ends[p] for p in parts):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its ends in 60 s: at {pos}, ends {ends}")
            for m in c.consume(500, timeout=0.5):
                if m.error() is not None or m.value() is None:
                    continue
                rec = client.Received(topic, m.partition(), m.offset(), m.key().decode() if m.key() else None,
                                      serde(topic).decode(m.value()), m.value(), {})
                if _matches(match, rec):
                    found.append(rec)
    finally:
        c.close()


def _matches(match, rec) -> bool:
    """A record the predicate cannot read (garbage or a tombstone that another test of the
    session put on a shared topic: value None) is not a match."""
    try:
        return bool(match(rec))
    except (TypeError, KeyError):
        if rec.value is None:
            return False
        raise


def produce(bootstrap: str, topic: str, records) -> None:
    asyncio.run(client.produce(bootstrap, topic, records))


def free_port() -> int:
    """A loopback port nothing listens on (once this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ResourceLedger:
    """The resources a shared topic says are there now (last record per key, tombstones
    removing), read incrementally: every test on the session broker is checked for resources
    it announced and left behind, which would turn later tests' plans into allocation
    requests that nobody answers."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Consumer, TopicPartition
        from topics import registry as T
        self.topic = T.RESOURCES_AVAILABILITY.name
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests-resource-ledger",
                           "enable.auto.commit": False, "auto.offset.reset": "earliest",
                           "isolation.level": "read_committed"})
        self.live: set[str] = set()
        self._tp = TopicPartition
        self._assigned: set[int] = set()

    def now(self) -> set[str]:
        """Resource ids whose last record is not a tombstone (read up to the ends of now)."""
        meta = self.c.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if meta is None or meta.error is not None:
            return set(self.live)
        new = set(meta.partitions) - self._assigned
        if new:
            self._assigned |= new
            self.c.assign([self._tp(self.topic, p, 0) for p in sorted(self._assigned)])   # OFFSET_BEGINNING
        ends = {p: self.c.get_watermark_offsets(self._tp(self.topic, p), timeout=10)[1] for p in self._assigned}
        deadline = time.monotonic() + 15
        while True:
            positions = {tp.partition: tp.offset for tp in self.c.position(
                [self._tp(self.topic, p) for p in self._assigned])}
            if all(positions[p] >= end or end == 0 for p, end in ends.items()):
                break
            if time.monotonic() > deadline:   # a partial view would pass or fail the guard wrongly
                raise TimeoutError(f"{self.topic} not read to its ends in 15 s: at {positions}, ends {ends}")
            for m in self.c.consume(500, timeout=0.5):
                if m.error() is not None or m.key() is None:
                    continue
                key = m.key().decode(errors="replace")
                if m.value() is None:
                    self.live.discard(key)
                elif self._valid(m.key(), m.value()):   # as the planner's view: invalid ones are skipped
                    self.live.add(key)
        return set(self.live)

    def _valid(self, key: bytes, value: bytes) -> bool:
        from processors.model import PlanningError
        from streams.planner import check_resource
        from processors.limits import Limits
        from topics.serde import SerdeError, serde
        try:
            check_resource(key, serde(self.topic).decode(value), Limits())
            return True
        except (SerdeError, PlanningError):
            return False

    def close(self) -> None:
        self.c.close()
