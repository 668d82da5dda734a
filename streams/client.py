"""Producing and reading Chimera topics from outside the worker (CLI, demo, tests)."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from topics import security
from topics.admin import BrokerUnreachable
from topics.registry import spec
from topics.serde import SerdeError, serde


@dataclass
class Received:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict | None            # decoded value (None for a dead letter)
    raw: bytes | None
    headers: dict[str, str]
    timestamp_ms: int = 0         # the record's Kafka timestamp

    def as_json(self) -> str:
        body = self.value if self.value is not None else {"raw": (self.raw or b"").decode("utf-8", "replace")}
        return json.dumps({"topic": self.topic, "partition": self.partition, "offset": self.offset,
                           "key": self.key, "headers": self.headers, "value": body}, sort_keys=True)


async def _started(client, bootstrap: str):
    try:
        await client.start()
    except (KafkaConnectionError, OSError) as exc:
        await client.stop()
        raise BrokerUnreachable(f"no Kafka broker answers at {bootstrap}: {exc}; "
                                "start one with `chimera up` or set KAFKA_BOOTSTRAP") from exc
    return client


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[str, dict | bytes | None]]) -> int:
    """Send (key, value) pairs; dict values are Avro-encoded first (a bad one raises SerdeError);
    a None value is a tombstone."""
    encoded = [(k, v if v is None or isinstance(v, bytes) else serde(topic).encode(v, strict=True))
               for k, v in records]
    producer = await _started(AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **security.aiokafka(),
                                               enable_idempotence=True), bootstrap)
    try:
        futures = [await producer.send(topic, key=k.encode(), value=v) for k, v in encoded]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(encoded)


async def read(bootstrap: str, topic: str, *, from_beginning: bool = True, idle_timeout_s: float | None = None,
               deadline_s: float | None = None, done: Callable[[], bool] | None = None) -> AsyncIterator[Received]:
    """Yield decoded records of a topic; stops after idle_timeout_s without records, at deadline_s,
    or once done() says so (checked at every poll)."""
    try:
        decodes = not topic.endswith(".dlq") and bool(spec(topic))
    except KeyError:
        decodes = False  # not a Chimera topic: raw values
    consumer = await _started(AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **security.aiokafka(),
                                               auto_offset_reset="earliest" if from_beginning else "latest"),
                              bootstrap)
    try:
        if topic in await consumer.topics():
            await consumer._client._wait_on_metadata(topic)  # the consumer's own cluster view
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            raise KeyError(f"topic {topic!r} does not exist on {bootstrap}: run `chimera topics create`")
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        started = last = time.monotonic()
        while True:
            now = time.monotonic()
            if deadline_s is not None and now - started > deadline_s:
                return
            if idle_timeout_s is not None and now - last > idle_timeout_s:
                return
            if done is not None and done():
                return
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                for m in msgs:
                    last = time.monotonic()
                    headers = {k: v.decode("utf-8", "replace") for k, v in (m.headers or ())}
                    value = None
                    if decodes:
                        try:
                            value = serde(topic).decode(m.value)
                        except SerdeError as exc:
                            headers["chimera.decode.error"] = str(exc)
                    yield Received(m.topic, m.partition, m.offset, m.key.decode() if m.key else None,
                                   value, m.value, headers, m.timestamp)
    finally:
        await consumer.stop()


async def partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of `topics`, as the consumer's own view of the cluster has them."""
    tps = []
    for topic in topics:
        await consumer._client._wait_on_metadata(topic)
        tps += [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    return tps


async def tail_from_end(bootstrap: str, topics: Sequence[str], **consumer_options) -> AIOKafkaConsumer:
    """A started consumer (no group) on every partition of `topics`, positioned at their
    current end before this returns: it sees exactly what is produced afterwards."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **security.aiokafka(), **consumer_options)
    await c.start()
    tps = await partitions(c, topics)
    c.assign(tps)
    await c.seek_to_end(*tps)
    for tp in tps:   # fix the position now, before anything is produced
        await c.position(tp)
    return c


async def commit_at_end(bootstrap: str, group: str, topics: Sequence[str]) -> None:
    """Commit `group`'s offsets at the current end of topics (before its worker exists), so that
    the worker starts there instead of re-reading earlier phases' records from `earliest`."""
    # the first commit on a new broker waits for __consumer_offsets: aiokafka logs each retry as an error
    import logging
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                **security.aiokafka())
    await consumer.start()
    try:
        tps = await partitions(consumer, topics)
        consumer.assign(tps)
        await consumer.commit(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()
