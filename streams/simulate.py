"""Simulated executors for the demo and the end-to-end tests: they announce resources and
keep their heartbeats, answer tasks.assigned with execution.feedback (STARTED, PROGRESS,
COMPLETED or FAILED, as a script says), and follow plans.updated until every plan ended.
The WebAssembly executor of the next issue replaces this; the records are the same."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

from aiokafka import AIOKafkaProducer

from processors.ids import event_id
from streams import client
from topics import registry as T
from topics.serde import serde

ENDED = ("COMPLETED", "FAILED", "CANCELLED")


def resource_record(rid: str, *, capabilities=(), agents: float = 2.0, cost: float = 1.0, now_ms: int | None = None,
                    health: str = "HEALTHY") -> dict:
    now_ms = now_ms or int(time.time() * 1000)
    return {"resource_id": rid, "kind": "agents", "capacities": {"agents": agents}, "capabilities": list(capabilities),
            "available": True, "hourly_rate": cost, "updated_at_ms": now_ms, "free": {"agents": agents},
            "health": health, "heartbeat_ms": now_ms}


@dataclass
class Run:
    """What the simulation saw: assignments (with broker timestamps), plan updates, alerts."""

    assignments: list[dict] = field(default_factory=list)
    created: dict[str, dict] = field(default_factory=dict)
    updates: dict[str, list[dict]] = field(default_factory=dict)
    alerts: list[dict] = field(default_factory=list)
    reported: list[dict] = field(default_factory=list)   # the feedback this simulation sent (acknowledged)
    status: dict[str, str] = field(default_factory=dict)


class Simulation:
    """`script(plan_id, task_id, attempt, resource_id)` -> "ok" | "fail" | "silent" (no answer) |
    "hang" (STARTED and PROGRESS 50 %, then nothing).
    Resources in `self.silent` stop heartbeating. `actual_hours(assignment)` says how long a
    completed task took (default: its most likely estimate)."""

    def __init__(self, bootstrap: str, resources: list[dict], script: Callable[[str, str, int, str | None], str],
                 *, work_s: float = 0.05, heartbeat_s: float = 1.0,
                 actual_hours: Callable[[dict], float] | None = None) -> None:
        self.bootstrap = bootstrap
        self.resources = resources
        self.script = script
        self.work_s = work_s
        self.heartbeat_s = heartbeat_s
        self.actual_hours = actual_hours or (lambda a: a["task"]["estimate"]["most_likely"])
        self.silent: set[str] = set()
        self.run = Run()
        self.producer: AIOKafkaProducer | None = None
        self.on_assignment: Callable[[dict], None] | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> "Simulation":
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2)
        await self.producer.start()
        self.consumer = await client.tail_from_end(self.bootstrap, [T.TASKS_ASSIGNED.name, T.PLANS_UPDATED.name, T.RISKS_ALERTS.name,
                                                     T.PLANS_CREATED.name])
        await self.heartbeat_once()
        self._bg = [asyncio.create_task(self._heartbeats())]
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stop_heartbeats()
        for t in list(self._tasks):
            t.cancel()
        await self.consumer.stop()
        await self.producer.stop()

    async def send(self, topic: str, key: str, value: dict | None, headers: dict[str, str] | None = None) -> None:
        data = None if value is None else serde(topic).encode(value, strict=True)
        await (await self.producer.send(topic, key=key.encode(), value=data,
                                        headers=[(k, v.encode()) for k, v in (headers or {}).items()] or None))

    async def heartbeat_once(self) -> None:
        now = int(time.time() * 1000)
        for r in self.resources:
            if r["resource_id"] not in self.silent:
                await self.send(T.RESOURCES_AVAILABILITY.name, r["resource_id"],
                                dict(r, updated_at_ms=now, heartbeat_ms=now))

    async def _stop_heartbeats(self) -> None:
        for t in self._bg:
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        self._bg = []

    async def tombstone(self) -> None:
        """Withdraw every resource for good. The heartbeats stop first: a heartbeat sent
        after its tombstone would bring the resource back for whoever reads the topic next."""
        await self._stop_heartbeats()
        for r in self.resources:
            await self.send(T.RESOURCES_AVAILABILITY.name, r["resource_id"], None)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.heartbeat_once()

    async def _execute(self, a: dict) -> None:
        pid, tid, attempt = a["plan_id"], a["task"]["task_id"], a["attempt"]
        what = self.script(pid, tid, attempt, a["assigned_to"])
        if what == "silent":
            return

        def fb(status: str, **extra) -> dict:
            return {"event_id": event_id("sim-feedback", pid, tid, attempt, status), "plan_id": pid, "task_id": tid,
                    "status": status, "reported_at_ms": int(time.time() * 1000), "attempt": attempt, **extra}
        await self._report(fb("STARTED"))
        await asyncio.sleep(self.work_s)
        await self._report(fb("PROGRESS", progress_pct=50.0))
        if what == "hang":
            return
        await asyncio.sleep(self.work_s)
        if what == "fail":
            await self._report(fb("FAILED", message="simulated failure"))
        else:
            hours = self.actual_hours(a)
            await self._report(fb("COMPLETED", actual_hours=hours))

    async def _report(self, feedback: dict) -> None:
        await self.send(T.EXECUTION_FEEDBACK.name, feedback["plan_id"], feedback)
        self.run.reported.append(feedback)

    async def until(self, plans: set[str], done: Callable[[Run], bool] | None = None, timeout_s: float = 120.0) -> Run:
        """Play executors for `plans` until `done(run)` (default: every plan ended) or the timeout."""
        done = done or (lambda run: all(run.status.get(p) in ENDED for p in plans))
        start = time.monotonic()
        while not done(self.run) and time.monotonic() - start < timeout_s:
            batch = await self.consumer.getmany(timeout_ms=100)
            for msgs in batch.values():
                for m in msgs:
                    if m.key is None or m.key.decode() not in plans:
                        continue
                    value = serde(m.topic).decode(m.value)
                    value["_ts"] = m.timestamp
                    if m.topic == T.TASKS_ASSIGNED.name:
                        self.run.assignments.append(value)
                        if self.on_assignment:
                            self.on_assignment(value)
                        t = asyncio.create_task(self._execute(value))
                        self._tasks.add(t)
                        t.add_done_callback(self._tasks.discard)
                    elif m.topic == T.PLANS_CREATED.name:
                        self.run.created.setdefault(value["plan_id"], value)
                    elif m.topic == T.PLANS_UPDATED.name:
                        pid = value["plan"]["plan_id"]
                        self.run.updates.setdefault(pid, []).append(value)
                        self.run.status[pid] = value["status"]
                    else:
                        self.run.alerts.append(value)
        return self.run
