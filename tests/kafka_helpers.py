"""Reading topics in tests: wait for records that match, with a deadline."""
from __future__ import annotations

import asyncio
import time

from streams import client


def collect(bootstrap: str, topic: str, match, *, count: int, timeout: float = 90.0, settle: float = 0.0):
    """Records of `topic` for which match(record) holds; waits until `count` arrived (then
    `settle` more seconds, to catch extras) or the timeout, whichever is first."""
    async def go():
        found, done_at = [], None
        async for rec in client.read(bootstrap, topic, deadline_s=timeout):
            if match(rec):
                found.append(rec)
            if len(found) >= count and done_at is None:
                done_at = time.monotonic()
                if settle <= 0:
                    break
            if done_at is not None and time.monotonic() - done_at >= settle:
                break
        return found
    return asyncio.run(go())


def produce(bootstrap: str, topic: str, records) -> None:
    asyncio.run(client.produce(bootstrap, topic, records))
