"""Run several sinks in one process, each in its own thread with its own consumer group.

`chimera sink clickhouse|neo4j|chroma|all` uses this; so can `chimera up`:

    with sinks.service.running(["all"], bootstrap, neo4j_uri=uri) as svc:   # data: [stores] dir
        ...            # svc.runners: name -> SinkRunner (lag, retries, dead letters)

The ClickHouse sink's process owns the chdb folder and serves reads for other processes
(sinks/clickhouse.py), so run at most one ClickHouse sink per data folder.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator

from sinks.base import SinkRunner, run_in_thread
from streams.settings import load_stores
from topics import probes

NAMES = ("clickhouse", "neo4j", "chroma")


def expand(names) -> list[str]:
    out: list[str] = []
    for n in names:
        for m in (NAMES if n == "all" else (n,)):
            if m not in NAMES:
                raise ValueError(f"unknown sink {m!r}: choose from {', '.join(NAMES)} or all")
            if m not in out:
                out.append(m)
    return out


def make_sink(name: str, data_dir: Path, neo4j_uri: str | None = None):
    if name == "clickhouse":
        from sinks.clickhouse import ClickHouseSink
        return ClickHouseSink(data_dir / "clickhouse", serve=True)
    if name == "neo4j":
        from sinks.neo4j import Neo4jSink
        return Neo4jSink(neo4j_uri)
    from sinks.chroma import ChromaSink
    return ChromaSink(data_dir / "chroma", serve=True)


class SinkService:
    def __init__(self, names, bootstrap: str, *, data_dir: Path | str | None = None, neo4j_uri: str | None = None,
                 group_prefix: str = "chimera-sink-", **runner_kwargs) -> None:
        if data_dir is None:   # [stores] dir (streams/settings.py), where the planner's memory looks too
            data_dir = load_stores().dir
        self.data_dir = Path(data_dir)
        self.runners = {n: SinkRunner(make_sink(n, self.data_dir, neo4j_uri), bootstrap, group=group_prefix + n,
                                      **runner_kwargs) for n in expand(names)}
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}

    def start(self) -> "SinkService":
        for n, r in self.runners.items():
            self._threads[n] = run_in_thread(r)
        probes.register("sinks", live=self.liveness, ready=self.readiness)
        return self

    def alive(self) -> dict[str, bool]:
        return {n: t.is_alive() for n, (t, _) in self._threads.items()}

    def liveness(self) -> str | None:
        """/healthz: a sink whose thread ended consumes nothing again until the process restarts."""
        dead = [n for n, ok in self.alive().items() if not ok]
        return f"sink thread(s) ended: {', '.join(dead)}" if dead else None

    def readiness(self) -> str | None:
        """/readyz: every store set up and its consumer subscribed, none paused for its store."""
        reasons = [f"{n}: {why}" for n, r in self.runners.items() if (why := r.not_ready())]
        return "; ".join(reasons) or None

    def stop(self, timeout: float = 30.0) -> None:
        probes.unregister("sinks", self.liveness)
        for _, stop in self._threads.values():
            stop.set()
        for t, _ in self._threads.values():
            t.join(timeout)


@contextlib.contextmanager
def running(names, bootstrap: str, **kwargs) -> Iterator[SinkService]:
    svc = SinkService(names, bootstrap, **kwargs).start()
    try:
        yield svc
    finally:
        svc.stop()


def summary(svc: SinkService, *, failed_task: tuple[str, str] | None = None, goal: dict | None = None) -> list[str]:
    """A few lines from each running store, for `make demo`: an analytics query result, a
    root-cause path for a failed task (plan_id, task_id), and a memory hit for a goal."""
    lines = []
    if "clickhouse" in svc.runners:
        from sinks import analytics
        store = svc.runners["clickhouse"].sink.store
        for row in analytics.run_dicts(store, "planning_latency"):
            lines.append(f"ClickHouse planning_latency: {row['plans']} plans, p50 {row['p50_ms']} ms, "
                         f"p99 {row['p99_ms']} ms")
        for row in analytics.run_dicts(store, "dlq_reasons")[:3]:
            lines.append(f"ClickHouse dlq_reasons: {row['dlq_topic']} {row['reason']} x{row['records']}")
    if "neo4j" in svc.runners and failed_task:
        from sinks.neo4j import Graph
        g = Graph(svc.runners["neo4j"].sink.uri)
        try:
            rc = g.root_cause(*failed_task)
        finally:
            g.close()
        lines.append(f"Neo4j root cause of {failed_task[1]}: " + (
            f"{' <- '.join(rc['path'])}; first failure {rc['root']} on {rc['executor'] or 'no executor'} "
            f"({', '.join(rc['resources'])}): {'; '.join(rc['reasons'])}" if rc else "no failure found"))
    if "chroma" in svc.runners and goal:
        hit = svc.runners["chroma"].sink.memory.recall(goal, threshold=0.0)
        lines.append(f"Chroma memory for '{goal['title']}': " + (
            f"{hit.metadata.get('title', hit.goal_id)} (similarity {hit.similarity:.2f}, "
            f"{hit.metadata.get('outcome')}, duration x{hit.duration_factor:.2f})" if hit else "no completed episode"))
    return lines
