"""What the planner agent has handled but not yet stored: one batch of records.

Each record is still handled alone, in order (the lifecycle sees the same states and makes the
same events as before), and its outputs go to the producer at once. What is batched is the
waiting: the agent no longer waits for the broker's acknowledgement of every record's outputs
before it reads the next record, and a plan's state is written to its table (RocksDB and the
changelog) once per batch, not once per record: a burst of feedback for one plan costs one
state write. The order that makes a crash harmless is kept per batch: first every output of
the batch is acknowledged, then the states are stored, then the records are acknowledged
(their offsets may be committed). A record read in between sees its plan's staged state.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from dataclasses import dataclass, field

from faust import streams as faust_streams


@dataclass
class Batch:
    """Staged states (plan id -> (bytes, PlanState, event), bytes and state None: dropped), the
    output futures and the events of the records handled since the last flush."""

    states: dict[str, tuple] = field(default_factory=dict)
    sent: list[asyncio.Future] = field(default_factory=list)
    events: list = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)   # when its first record was added

    def stage(self, plan_id: str, data: bytes | None, state) -> None:
        """The plan's new state, made by the record being handled (Faust's current event)."""
        self.states[plan_id] = (data, state, faust_streams.current_event())

    def staged(self, plan_id: str) -> tuple | None:
        """(bytes, state) staged for the plan, or None when the table holds its latest state."""
        got = self.states.get(plan_id)
        return None if got is None else got[:2]

    def outputs(self, futures: list[asyncio.Future]) -> None:
        """A record's output futures. One that failed already (e.g. a record the producer
        refuses outright) raises here, before the record's state is staged, as a send did."""
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
        self.sent.extend(f for f in futures if f not in failed)
        if failed:
            raise failed[0].exception()

    def __len__(self) -> int:
        return len(self.events)

    async def delivered(self) -> None:
        """Wait until the broker has every output of the batch (raises the first failure)."""
        if self.sent:
            await asyncio.gather(*self.sent)


@contextlib.contextmanager
def as_of(event):
    """Table writes as if `event` were being handled: a Faust table picks the RocksDB partition
    and the changelog partition of a write from the current event (a flush runs after it)."""
    token = faust_streams._current_event.set(None if event is None else weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)
