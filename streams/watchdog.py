"""Liveness from progress, not from the process: a worker whose consumer has lag but
reads nothing, or owns no partition at all, for `stall_s` is unhealthy and exits so its
supervisor restarts it. Faust consumers are reported to stall silently over long runs
(faust-streaming issues 175 and 640); a process check alone would not notice.

The same facts answer the process's probes (topics/probes.py): live while the loop turns,
ready once it owns partitions of its sources and is neither rebalancing nor recovering tables.

A second guard runs in a thread: if the event loop itself stops turning (a handler
stuck in CPU work) the thread ends the process, since no coroutine could.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Callable, Iterable, Mapping

from prometheus_client import Gauge

from topics import probes

log = logging.getLogger("chimera.watchdog")
HEALTHY = Gauge("chimera_worker_healthy", "1 while the worker's consumer makes progress (or has no lag)")
EXIT_STALLED = 70


class Progress:
    """Decides health from samples of (committed offset, high watermark) per owned partition."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self._last: dict = {}
        self._since: float | None = None      # when the current stall began
        self._unassigned_since: float | None = None

    def observe(self, positions: Mapping[object, tuple[int | None, int | None]]) -> str | None:
        """The reason the worker is unhealthy, or None. `positions`: tp -> (committed, highwater)."""
        now = self.clock()
        if not positions:
            self._since = None
            if self._unassigned_since is None:
                self._unassigned_since = now
            if now - self._unassigned_since >= self.stall_s:
                return f"owns no partition for {now - self._unassigned_since:.0f} s (left its group?)"
            return None
        self._unassigned_since = None
        lagging = {tp for tp, (read, high) in positions.items() if high is not None and (read or 0) < high}
        moved = any(self._last.get(tp) != pos[0] for tp, pos in positions.items())
        self._last = {tp: pos[0] for tp, pos in positions.items()}
        if not lagging or moved:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        if now - self._since >= self.stall_s:
            detail = ", ".join(f"{getattr(tp, 'topic', tp)}[{getattr(tp, 'partition', '')}] at {positions[tp][0]} of "
                               f"{positions[tp][1]}" for tp in sorted(lagging, key=str)[:8])
            return f"{len(lagging)} partition(s) with lag and no progress for {now - self._since:.0f} s: {detail}"
        return None


def _die(reason: str) -> None:
    HEALTHY.set(0)
    log.critical("unhealthy: %s; exiting with %d so the supervisor restarts the worker", reason, EXIT_STALLED)
    logging.shutdown()
    os._exit(EXIT_STALLED)


def die(reason: str) -> None:
    """Exit unhealthy now (the supervisor restarts the worker, which reads again from its
    committed offsets): for a worker that cannot go on without losing or reordering records."""
    _die(reason)


async def _positions(app, sources: frozenset[str]) -> dict:
    """tp -> (committed offset, high watermark) for the agents' source partitions. Committed,
    not fetched: Faust fetches ahead into a buffer while a stuck agent processes nothing, and
    commits only what the agent finished. Table changelogs are left out: a worker owns their
    partitions but only writes to them.

    A transaction's commit marker takes an offset that no consumer ever receives: after the
    executors' transactional feedback the committed offset stays one short of the high
    watermark for good. A partition whose fetch position has reached the high watermark, with
    no record of it waiting in the worker, is caught up: it is reported with no lag."""
    consumer = app.consumer
    waiting = {m.tp for m in list(consumer._unacked_messages) if not m.acked}
    out = {}
    for tp in consumer.assignment():
        if tp.topic not in sources:
            continue
        try:
            high = consumer.highwater(tp)
        except Exception:  # not fetched yet
            high = None
        read = consumer._committed_offset.get(tp)
        if high is not None and (read or 0) < high and tp not in waiting:
            try:
                fetched = await asyncio.wait_for(consumer.position(tp), timeout=2.0)
            except Exception:  # noqa: BLE001 - no position: judged on the committed offset alone
                fetched = None
            if fetched is not None and fetched >= high:
                high = read
        out[tp] = (read, high)
    return out


def _report_lag(positions: Mapping) -> None:
    """chimera_consumer_lag{topic}: high watermark minus committed offset, summed per topic."""
    from streams.metrics import CONSUMER_LAG
    lag: dict[str, int] = {}
    for tp, (read, high) in positions.items():
        topic = getattr(tp, "topic", str(tp))
        lag[topic] = lag.get(topic, 0) + (max(0, high - (read or 0)) if high is not None else 0)
    for topic, n in lag.items():
        CONSUMER_LAG.labels(topic).set(n)


def _loop_turns(last_beat: float, within_s: float) -> str | None:
    """Liveness for /healthz: the watchdog's timer ran lately (so the event loop turns)."""
    idle = time.monotonic() - last_beat
    return None if idle <= within_s else f"event loop has not run the watchdog for {idle:.0f} s"


def install(app, sources: Iterable[str], *, interval_s: float, stall_s: float) -> None:
    """Watch the progress of `app`'s consumer on the `sources` topics, and its event loop;
    exit when either stalls."""
    sources = frozenset(sources)
    progress = Progress(stall_s)
    beat = [time.monotonic()]
    not_ready = ["no watchdog check yet (starting)"]
    HEALTHY.set(1)
    probes.register("planner", live=lambda: _loop_turns(beat[0], stall_s + interval_s),
                    ready=lambda: not_ready[0])

    @app.timer(interval=interval_s, on_leader=False)
    async def watch() -> None:
        beat[0] = time.monotonic()
        if app.rebalancing or app.tables.recovery.in_recovery:
            not_ready[0] = "rebalancing" if app.rebalancing else "recovering its tables from their changelogs"
            return
        positions = await _positions(app, sources)
        _report_lag(positions)
        not_ready[0] = None if positions else "owns no partition of its source topics"
        why = progress.observe(positions)
        if why:
            _die(why)

    def loop_guard() -> None:
        while True:
            time.sleep(interval_s)
            if time.monotonic() - beat[0] > stall_s + interval_s:
                _die(f"event loop blocked for {time.monotonic() - beat[0]:.0f} s")

    @app.task
    async def start_guard() -> None:
        beat[0] = time.monotonic()
        threading.Thread(target=loop_guard, name="watchdog", daemon=True).start()
        await asyncio.sleep(0)
