"""One correction to faust-streaming 0.15 that a restarted worker needs.

Faust drops records it has already fetched when the flow stops mid-batch (a rebalance, a
recovery) and relies on "seek back to committed offsets" to read them again. aiokafka's
`seek_to_committed` seeks only where an offset greater than 0 was committed, so a partition
with no commit yet (a worker killed before its first commit) stayed past the dropped records:
its goals were never planned and the partition looked stalled until the watchdog restarted
the worker. Here such partitions go back to their beginning, which is what the group's
`earliest` reset policy means for them anyway; the planner is idempotent, so a replay is safe.
"""
from __future__ import annotations

from typing import Mapping

from faust.transport.drivers import aiokafka as driver
from faust.types import TP

_applied = False


async def _seek_to_committed(self) -> Mapping[TP, int]:
    consumer = self._ensure_consumer()

    async def seek() -> Mapping[TP, int]:
        committed = await consumer.seek_to_committed()
        uncommitted = [tp for tp, offset in committed.items() if not offset]
        if uncommitted:
            await consumer.seek_to_beginning(*uncommitted)
        return committed

    return await self.call_thread(seek)


def apply() -> None:
    """Install the correction once per process."""
    global _applied
    if not _applied:
        driver.AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed
        _applied = True
