"""A topic every worker reads whole, on its own (no consumer group).

Faust's GlobalTable is filled on the worker whose agent writes it; on the others it is
fed by the table's changelog, which in faust-streaming stopped updating (robinhood/faust
#716, faust-streaming/faust #283): a second worker saw every resource as silent and an
emergency stop late. Resources and the stop-everything flag are small and every worker
needs them within a second, so each worker tails the topic itself from the beginning.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer

from topics import security

from streams import client

log = logging.getLogger("chimera.tail")


async def follow(bootstrap: str, topic: str, see: Callable[[bytes | None, bytes | None], None],
                 caught_up: asyncio.Event) -> None:
    """Call `see(key, value)` for every record of `topic`, from its beginning, forever;
    `caught_up` is set once every record that was there at the start has been seen."""
    while True:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    group_id=None, auto_offset_reset="earliest", **security.aiokafka())
        try:
            await consumer.start()
            tps = await client.partitions(consumer, [topic])
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    for m in msgs:
                        see(m.key, m.value)
                if not caught_up.is_set():
                    behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
                    if not behind:
                        log.info("caught up with %s", topic)
                        caught_up.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("following %s failed; starting again", topic)
            await asyncio.sleep(1.0)
        finally:
            await consumer.stop()
