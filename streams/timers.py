"""Which plans a worker's timers must look at, kept as states are stored.

The tick timer runs four times a second. Scanning the plans table each time cost O(plans)
(100,000 stored plans: 400,000 header reads a second), and an index of every plan in memory
grows with the table (the table itself lives on disk). So the watchlist keeps only what is
due within HORIZON_MS, what holds a resource (bounded by the resources' capacity) and what
waits for a resume; every stored state updates it, and a sweep reads SWEEP_PER_TICK stored
headers per tick, in table order, at most one round a minute, to pick up far-off due times
as they come near and finished plans whose state may expire. A round plus the pause must
take less than the horizon: 200 headers a tick cover 0.9 million plans in an hour.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterable, Iterator

from processors import lifecycle as L
from processors.config import PlanningConfig

RETICK_MS = 1000   # a plan ticked whose state did not move is looked at again after this
HORIZON_MS = 60 * 60_000
SWEEP_PER_TICK = 200
ROUND_EVERY_MS = 60_000   # a sweep round starts at most this often (a small table costs ~nothing)


@dataclass(frozen=True)
class Watch:
    """What a timer needs of one stored plan."""
    due_ms: int | None = None              # retries, deadlines, placements, drift checks
    resources: tuple[str, ...] = ()        # checked for loss
    held: bool = False                     # waits for a resume of everything
    finished_at_ms: int | None = None      # for expiry


def watch_of(state: L.PlanState | None, config: PlanningConfig) -> Watch | None:
    """None when no timer will ever need this plan as it stands (an active plan with nothing due)."""
    if state is None:
        return None
    w = Watch(L.next_due_ms(state, config), L.resources_in_use(state), L.held(state), state.finished_at_ms)
    return w if w != Watch() else None


def watch_of_header(header: dict) -> Watch | None:
    """The same, from a stored state's header (streams.state.header), for a rebuild."""
    w = Watch(header.get("n"), tuple(header.get("u") or ()), bool(header.get("hd")), header.get("f"))
    return w if w != Watch() else None


class Watchlist:
    def __init__(self) -> None:
        self._watch: dict[str, Watch] = {}
        self._due: list[tuple[int, str]] = []          # heap; stale entries skipped on pop
        self._by_resource: dict[str, set[str]] = {}
        self._held: set[str] = set()

    def __len__(self) -> int:
        return len(self._watch)

    def clear(self) -> None:
        self.__init__()

    def set(self, plan_id: str, watch: Watch | None, now_ms: int) -> None:
        """The plan's latest watch; a due time beyond the horizon is left to the sweep."""
        if watch is not None:
            if watch.due_ms is not None and watch.due_ms > now_ms + HORIZON_MS:
                watch = Watch(None, watch.resources, watch.held)
            if watch.finished_at_ms is not None:   # expiry is the sweep's
                watch = Watch(watch.due_ms, watch.resources, watch.held)
            if watch == Watch():
                watch = None
        old = self._watch.pop(plan_id, None)
        if old is not None:
            for rid in old.resources:
                plans = self._by_resource.get(rid)
                if plans is not None:
                    plans.discard(plan_id)
                    if not plans:
                        del self._by_resource[rid]
            self._held.discard(plan_id)
        if watch is None:
            return
        self._watch[plan_id] = watch
        for rid in watch.resources:
            self._by_resource.setdefault(rid, set()).add(plan_id)
        if watch.held:
            self._held.add(plan_id)
        if watch.due_ms is not None and (old is None or old.due_ms != watch.due_ms):
            heapq.heappush(self._due, (watch.due_ms, plan_id))
            if len(self._due) > 4 * len(self._watch) + 1000:   # mostly stale entries: rebuild
                self._due = [(w.due_ms, p) for p, w in self._watch.items() if w.due_ms is not None]
                heapq.heapify(self._due)

    def due(self, now_ms: int) -> list[str]:
        """Plans due by now. Each is looked at again RETICK_MS later unless its state moves."""
        out = []
        while self._due and self._due[0][0] <= now_ms:
            at, pid = heapq.heappop(self._due)
            w = self._watch.get(pid)
            if w is None or w.due_ms != at:
                continue   # stale: the plan moved on since this entry was pushed
            out.append(pid)
        for pid in out:
            w = self._watch[pid]
            retick = now_ms + RETICK_MS
            self._watch[pid] = Watch(retick, w.resources, w.held, w.finished_at_ms)
            heapq.heappush(self._due, (retick, pid))
        return out

    def using(self, resource_ids: Iterable[str]) -> dict[str, list[str]]:
        """Plan -> which of these resources it uses."""
        out: dict[str, list[str]] = {}
        for rid in resource_ids:
            for pid in self._by_resource.get(rid, ()):
                out.setdefault(pid, []).append(rid)
        return out

    def resources(self) -> Iterator[str]:
        return iter(self._by_resource)

    def held(self) -> list[str]:
        return list(self._held)
