"""The planner's episodic-memory look-up, off the event loop, with a timeout.

The Chroma folder belongs to the Chroma sink's process (a second PersistentClient in another
process does not see its writes), which serves `POST /recall` on loopback and writes the
address to `<dir>/memory.json` (sinks/chroma.py). This module asks it in an executor thread
and waits at most `timeout_s`: a slow, absent or failing memory never stalls the Faust event
loop, the goal is then planned without memory. While one look-up is still running (timed
out, not finished), the next goals skip memory instead of queueing behind it.

What comes back becomes a `processors.memory.Episode`; whether and how it is reused is the
domain's decision (`processors.memory.reuse`). Metrics: `chimera_memory_lookups_total{result}`,
`layer2_plans_memory_total{used}` and `layer2_memory_reuse_rate` (plans that reused memory /
plans, in this worker).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib import request as urlrequest

from prometheus_client import Counter, Gauge

from processors import memory
from processors.memory import Episode, EpisodeTask, Reuse, ReusePolicy
from processors.model import Goal
from streams.settings import MemorySettings

log = logging.getLogger("chimera.memory")

LOOKUPS = Counter("chimera_memory_lookups_total", "Episodic-memory look-ups by result "
                  "(hit, miss, timeout, busy, unavailable, error)", ["result"])
PLANS = Counter("layer2_plans_memory_total", "First plans, by whether they reused episodic memory", ["used"])
REUSE_RATE = Gauge("layer2_memory_reuse_rate", "Share of this worker's first plans that reused episodic memory")
_counts = {"used": 0, "all": 0}


def record_plan(used: bool) -> None:
    """Count a first plan (with or without memory) for the reuse-rate metrics."""
    PLANS.labels("true" if used else "false").inc()
    _counts["all"] += 1
    _counts["used"] += int(used)
    REUSE_RATE.set(_counts["used"] / _counts["all"])


def episode_from_json(d: dict) -> Episode:
    return Episode(goal_id=str(d["goal_id"]), similarity=float(d["similarity"]), outcome=str(d.get("outcome", "")),
                   tasks=tuple(EpisodeTask(task_id=str(t["task_id"]), name=str(t["name"]),
                                           planned_hours=float(t["planned_hours"]),
                                           depends_on=tuple(str(x) for x in t.get("depends_on", ())),
                                           actual_hours=None if t.get("actual_hours") is None
                                           else float(t["actual_hours"]),
                                           resources={str(k): float(v) for k, v in (t.get("resources") or {}).items()},
                                           capabilities=tuple(str(c) for c in t.get("capabilities", ())))
                               for t in d.get("tasks", ())))


class MemoryLookup:
    """`await lookup.recall(goal_record)` -> Episode | None, never slower than timeout_s."""

    def __init__(self, settings: MemorySettings) -> None:
        self.settings = settings
        self.policy = ReusePolicy(threshold=settings.threshold, min_factor=settings.min_factor,
                                  max_factor=settings.max_factor)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory")
        self._inflight: asyncio.Future | None = None

    @classmethod
    def from_settings(cls, settings: MemorySettings) -> "MemoryLookup | None":
        """None when memory is off, or when there is neither a url nor a Chroma folder."""
        if not settings.enabled:
            return None
        if not settings.url and not Path(settings.dir).is_dir():
            log.info("episodic memory off: no Chroma folder at %s and no [memory] url", settings.dir)
            return None
        return cls(settings)

    def _url(self) -> str | None:
        if self.settings.url:
            return self.settings.url
        try:
            info = json.loads((Path(self.settings.dir) / "memory.json").read_text())
            os.kill(int(info["pid"]), 0)      # the owner is alive
            return str(info["url"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _ask(self, goal: dict) -> dict | None:
        url = self._url()
        if url is None:
            raise LookupError("no memory endpoint")
        body = json.dumps({"goal": goal, "threshold": self.policy.threshold}, default=str).encode()
        req = urlrequest.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urlrequest.urlopen(req, timeout=max(self.settings.timeout_s * 4, 1.0)) as resp:
            return json.loads(resp.read()).get("episode")

    async def recall(self, goal: dict) -> Episode | None:
        if self._inflight is not None and not self._inflight.done():
            LOOKUPS.labels("busy").inc()
            return None
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, self._ask, goal)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even after a timeout
        self._inflight = fut
        try:
            found = await asyncio.wait_for(asyncio.shield(fut), self.settings.timeout_s)
        except asyncio.TimeoutError:
            LOOKUPS.labels("timeout").inc()
            return None
        except LookupError:
            LOOKUPS.labels("unavailable").inc()
            return None
        except Exception as exc:  # noqa: BLE001 - memory is optional: plan without it
            LOOKUPS.labels("error").inc()
            from streams.metrics import INTEGRATION_ERRORS
            INTEGRATION_ERRORS.labels("memory").inc()
            log.warning("memory look-up failed: %s: %s", type(exc).__name__, exc)
            return None
        if found is None:
            LOOKUPS.labels("miss").inc()
            return None
        try:
            episode = episode_from_json(found)
        except (KeyError, TypeError, ValueError) as exc:
            LOOKUPS.labels("error").inc()
            log.warning("memory answered an unusable episode: %s", exc)
            return None
        LOOKUPS.labels("hit").inc()
        return episode

    async def reuse(self, goal: Goal, record: dict) -> Reuse | None:
        """What the planner hands to lifecycle.on_goal: a past episode to plan from, or None."""
        if goal.tasks or goal.strategy:     # the author's breakdown or strategy wins: no look-up
            return None
        return memory.reuse(goal, await self.recall(record), self.policy)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def count_plans(events) -> None:
    """Count each first plan among a record's domain events for the reuse-rate metrics."""
    for e in events:
        plan = getattr(e, "plan", None)
        if plan is not None and type(e).__name__ == "PlanCreated":
            record_plan(plan.memory is not None)
