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

    def stage(self, plan_id: str, data, state) -> None:
        """The new state of a plan (or ledger), made by the record being handled (Faust's
        current event): its bytes, None (delete), or a function that encodes it at the flush."""
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


class Writer:
    """One agent's table, written in batches (see the module docstring): `run` handles each
    record with `handle(event)`, which reads with `staged` before the table and stages with
    `batch.stage`/`batch.outputs`; a batch is flushed when the agent's buffer is empty, after
    `max_records`, or by `flush_idle` (a timer) once the agent waits. `stored(key, data,
    state)` runs for every state stored (data None: deleted)."""

    def __init__(self, name: str, table, stored=None, *, max_records: int = 256, idle_s: float = 0.05) -> None:
        self.name = name
        self.table = table
        self.stored = stored
        self.max_records = max_records
        self.idle_s = idle_s
        self.batch = Batch()
        self._flushing: list[Batch] = []   # batches whose outputs are awaited, oldest first
        self._lock = asyncio.Lock()        # flushes store and acknowledge in batch order
        self._stream = None
        self._handling = False
        self._idle_flush: asyncio.Future | None = None

    def staged(self, key: str) -> tuple | None:
        """(bytes, state) of the key's latest staged state, not stored yet; None: see the table."""
        for batch in (self.batch, *reversed(self._flushing)):
            got = batch.staged(key)
            if got is not None:
                return got
        return None

    async def run(self, stream, handle) -> None:
        self._stream = manual = stream.noack()
        queue = getattr(manual.channel, "queue", None)
        async for event in manual.events():
            self._handling = True
            try:
                await handle(event)
            finally:
                self._handling = False
            if not self.batch.events:
                self.batch.since = time.monotonic()
            self.batch.events.append(event)
            if len(self.batch) >= self.max_records or queue is None or queue.empty():
                await self.flush()

    async def flush_idle(self) -> None:
        """A batch must not wait for the next record: a rebalance clears the agent's buffer and
        then waits until every record taken is acknowledged (the agent's own check can miss it)."""
        if (not self._handling and not self._lock.locked() and self.batch.events
                and time.monotonic() - self.batch.since >= self.idle_s):
            self._idle_flush = asyncio.ensure_future(self.flush())   # the timer does not wait for the broker

    async def flush(self) -> None:
        """Outputs acknowledged, then states stored, then records acknowledged: a state in the
        changelog always has its records downstream, and a committed record its state. Outputs
        the broker did not take (after the producer's timeout) leave the batch unacknowledged
        and the worker exits, so that it reads the batch again after its restart (outputs carry
        deterministic event ids: sinks upsert the ones that did arrive). While a batch is being
        flushed the agent goes on with the next one (`staged` reads both)."""
        batch = self.batch
        if not batch.events and not batch.states and not batch.sent:
            return
        self.batch = Batch()
        self._flushing.append(batch)
        async with self._lock:
            try:
                await batch.delivered()
            except Exception as exc:
                from streams import metrics, watchdog
                metrics.INTEGRATION_ERRORS.labels("kafka").inc()
                watchdog.die(f"outputs of {len(batch)} {self.name} records not delivered: {type(exc).__name__}: {exc}")
                return
            for key, (data, state, event) in batch.states.items():
                if callable(data):   # encoded only now: the last state of the batch is the one stored
                    data = data()
                with as_of(event):
                    if data is None:
                        self.table.pop(key, None)
                    else:
                        self.table[key] = data
                    if self.stored is not None:
                        self.stored(key, data, state)
            self._flushing.remove(batch)
            for event in batch.events:
                await self._stream.ack(event)
