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
