"""Run several sinks in one process, each in its own thread with its own consumer group.

`chimera sink clickhouse|neo4j|chroma|all` uses this; so can `chimera up`:

    with sinks.service.running(["all"], bootstrap, data_dir=".data", neo4j_uri=uri) as svc:
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
    return ChromaSink(data_dir / "chroma")


class SinkService:
    def __init__(self, names, bootstrap: str, *, data_dir: Path | str = ".data", neo4j_uri: str | None = None,
                 group_prefix: str = "chimera-sink-", **runner_kwargs) -> None:
        self.data_dir = Path(data_dir)
        self.runners = {n: SinkRunner(make_sink(n, self.data_dir, neo4j_uri), bootstrap, group=group_prefix + n,
                                      **runner_kwargs) for n in expand(names)}
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}

    def start(self) -> "SinkService":
        for n, r in self.runners.items():
            self._threads[n] = run_in_thread(r)
        return self

    def alive(self) -> dict[str, bool]:
        return {n: t.is_alive() for n, (t, _) in self._threads.items()}

    def stop(self, timeout: float = 30.0) -> None:
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
