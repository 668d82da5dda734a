"""Real executors for the end-to-end tests: started as `python -m executor.service` processes,
stopped (SIGTERM; SIGKILL if they hang) at the end, and the resources they announced tombstoned
(the broker is shared by the session's tests). Plus execution.feedback as a read_committed
consumer sees it."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from processors import ids
from topics import registry as T
from topics.serde import serde

REPO = Path(__file__).resolve().parents[1]
_n = itertools.count()


def ends(bootstrap: str, topic: str) -> list[TopicPartition]:
    """The current end of every partition of `topic`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return [TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                for p in parts]
    finally:
        c.close()


class Feedback:
    """execution.feedback as a read_committed consumer sees it, from given offsets on."""

    def __init__(self, bootstrap: str, start: list[TopicPartition], plans: set[str]) -> None:
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fb-{os.getpid()}-{next(_n)}",
                           "enable.auto.commit": False, "isolation.level": "read_committed"})
        self.c.assign(start)
        self.plans = plans
        self.records: list[dict] = []
        self.s = serde(T.EXECUTION_FEEDBACK.name)

    def poll(self, timeout: float = 0.2) -> None:
        for m in self.c.consume(500, timeout):
            if not m.error():
                r = self.s.decode(m.value())
                if r["plan_id"] in self.plans:
                    r["_ts"] = m.timestamp()[1]
                    r["_headers"] = {k: (v or b"").decode() for k, v in (m.headers() or [])}
                    self.records.append(r)

    def poll_until(self, pred, timeout: float, settle: float = 0.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        reached = None
        while time.monotonic() < deadline:
            self.poll()
            if reached is None and pred(self.records):
                reached = time.monotonic()
            if reached is not None and time.monotonic() - reached >= settle:
                break
        return self.records

    def terminal(self) -> Counter:
        return Counter((r["plan_id"], r["task_id"], r["status"]) for r in self.records
                       if r["status"] in ("COMPLETED", "FAILED", "CANCELLED"))

    def close(self) -> None:
        self.c.close()


def tombstone(bootstrap: str, resource_ids) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for rid in resource_ids:
        p.produce(T.RESOURCES_AVAILABILITY.name, key=rid.encode(), value=None)
    p.flush(10)


class Executors:
    """A factory of executor processes; `close()` stops them and tombstones what they announced."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.ids: set[str] = set()

    def __call__(self, executor_id: str, slots: int = 2, *, capabilities=(), rate: float = 0.0,
                 heartbeat_s: float = 1.0, args=(), env=None, entry: str = "executor.service") -> subprocess.Popen:
        """`entry`: the module run with `python -m` (tests.hostile_executor: the service with the
        hostile test modules registered)."""
        log = open(self.tmp_path / f"{executor_id}-{len(self.procs)}.log", "w")
        cmd = [sys.executable, "-m", entry, "--bootstrap", self.bootstrap, "--id", executor_id,
               "--slots", str(slots), "--heartbeat-s", str(heartbeat_s), "--hourly-rate", str(rate),
               "--work-root", str(self.tmp_path / executor_id)]
        for c in capabilities:
            cmd += ["--capability", c]
        p = subprocess.Popen(cmd + list(args), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        self.procs.append(p)
        self.ids.add(executor_id)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        tombstone(self.bootstrap, self.ids)
        for f in sorted(self.tmp_path.glob("*.log")):
            print(f"--- {f.name} ---\n{f.read_text()[-3000:]}")


def task(task_id: str, name: str, description: str = "", phase: str = "") -> dict:
    """A plan's task as tasks.assigned carries it (`description` "wasm: <module> <args>" picks the module)."""
    return {"task_id": task_id, "name": name, "description": description, "phase": phase, "component": "",
            "depends_on": [], "estimate": {"optimistic": 1.0, "most_likely": 1.0, "pessimistic": 1.0},
            "resources": {"agents": 1.0}, "capabilities": [], "success_criteria": ["done"], "validation": [],
            "risk_mitigation": False, "start_hours": 0.0, "finish_hours": 1.0, "earliest_start_hours": 0.0,
            "latest_start_hours": 0.0, "slack_hours": 0.0, "critical": True}


def assignment(plan_id: str, task: dict, attempt: int = 1) -> dict:
    """An assignment naming no executor (run by one started with --unassigned)."""
    return {"event_id": ids.event_id("tasks.assigned", plan_id, task["task_id"], attempt), "plan_id": plan_id,
            "goal_id": "goal-" + plan_id, "plan_version": 1, "task": task, "assigned_to": None,
            "assigned_at_ms": int(time.time() * 1000), "attempt": attempt}


def produce_assignments(bootstrap: str, records: list[dict]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    s = serde(T.TASKS_ASSIGNED.name)
    for r in records:
        p.produce(T.TASKS_ASSIGNED.name, key=r["plan_id"].encode(), value=s.encode(r))
    assert p.flush(30) == 0
