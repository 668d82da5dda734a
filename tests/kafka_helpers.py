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
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        found = []
        for m in _to_ends(c, topic, parts, within_s=60):
            if m.value() is None:
                continue
            rec = client.Received(topic, m.partition(), m.offset(), m.key().decode() if m.key() else None,
                                  serde(topic).decode(m.value()), m.value(), {})
            if _matches(match, rec):
                found.append(rec)
        return found
    finally:
        c.close()


def _to_ends(c, topic: str, parts, *, within_s: float):
    """The messages of `topic`'s partitions `parts` (assigned to consumer `c`) from its position up
    to the ends they have now; a partial read raises (a partial view would mislead its caller)."""
    from confluent_kafka import TopicPartition
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    deadline = time.monotonic() + within_s
    while True:
        pos = {tp.partition: tp.offset for tp in c.position([TopicPartition(topic, p) for p in parts])}
        if all(end == 0 or pos[p] >= end for p, end in ends.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} not read to its ends in {within_s:g} s: at {pos}, ends {ends}")
        for m in c.consume(500, timeout=0.5):
            if m.error() is None:
                yield m


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
        for m in _to_ends(self.c, self.topic, sorted(self._assigned), within_s=15):
            if m.key() is None:
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
