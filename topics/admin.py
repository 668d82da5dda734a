"""Idempotent topic creation: Faust does not create its source topics itself."""
from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from topics import security
from topics.registry import all_topic_names, spec


class BrokerUnreachable(ConnectionError):
    """No Kafka broker answers at the bootstrap address."""


async def _admin(bootstrap: str, timeout_s: float) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                **security.aiokafka())
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaConnectionError, asyncio.TimeoutError, OSError) as exc:
        await admin.close()
        raise BrokerUnreachable(f"no Kafka broker answers at {bootstrap} ({type(exc).__name__}: {exc}); "
                                "start one with `chimera up` or set KAFKA_BOOTSTRAP") from exc
    return admin


async def create_topics(bootstrap: str, names: list[str] | None = None, *, replication: int = 1,
                        timeout_s: float = 15.0) -> list[str]:
    """Create the missing topics among `names` (default: all); return the ones created."""
    admin = await _admin(bootstrap, timeout_s)
    try:
        existing = set(await admin.list_topics())
        wanted = [spec(n) for n in (names or all_topic_names()) if n not in existing]
        created = []
        for t in wanted:
            try:
                await admin.create_topics([NewTopic(t.name, t.partitions, replication, topic_configs=t.config)])
                created.append(t.name)
            except TopicAlreadyExistsError:
                pass  # created meanwhile by another worker: fine
        return created
    finally:
        await admin.close()


async def list_topics(bootstrap: str, timeout_s: float = 15.0) -> dict[str, int]:
    """Topic name -> partition count, for every topic on the broker."""
    admin = await _admin(bootstrap, timeout_s)
    try:
        names = await admin.list_topics()
        described = await admin.describe_topics(list(names))
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()
