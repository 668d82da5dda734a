"""The local stack: a Kafka broker (or KAFKA_BOOTSTRAP), the topics, planner workers.

Starts what is needed, waits until each part answers, and stops everything it
started (and only that) on exit, even on failure.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from infra.kafka import KafkaBroker
from infra.process import die_with_parent, terminate
from topics.admin import create_topics


class Worker:
    """A planner worker in its own process (a real Faust worker); `module` runs another
    Faust app the same way (the benchmark's passthrough baseline)."""

    def __init__(self, bootstrap: str, *, env: dict[str, str] | None = None, log_path: Path | None = None,
                 app_id: str = "chimera-planner", module: str = "streams.worker") -> None:
        self.bootstrap = bootstrap
        self.module = module
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix="chimera-worker-")) / "worker.log"
        self.env = {**os.environ, **(env or {}), "KAFKA_BOOTSTRAP": bootstrap, "CHIMERA_APP_ID": app_id,
                    # one state folder per worker: two workers of one app in one folder fight
                    # over the same RocksDB locks when partitions move between them
                    "CHIMERA_DATA_DIR": str(self.log_path.parent / f"faust-{self.log_path.stem}")}
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()

    def supervise(self, backoff_s: float = 1.0, max_backoff_s: float = 30.0) -> "Worker":
        """Restart the worker whenever it exits on its own (a crash, or its watchdog found
        it stalled), with exponential backoff; `stop` ends the supervision first."""
        def loop() -> None:
            delay, started = backoff_s, time.monotonic()
            while not self._stopping.wait(0.5):
                proc = self.proc
                if proc is None or proc.poll() is None:
                    if time.monotonic() - started > 60:
                        delay = backoff_s  # it ran a while: the next crash restarts quickly again
                    continue
                with self.log_path.open("ab") as log:
                    log.write(f"--- supervisor: worker exited with {proc.returncode}; "
                              f"restarting in {delay:g} s ---\n".encode())
                if self._stopping.wait(delay):
                    return
                self.start()
                self.restarts += 1
                started, delay = time.monotonic(), min(delay * 2, max_backoff_s)
        self._supervisor = threading.Thread(target=loop, name="worker-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def start(self) -> "Worker":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=die_with_parent)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        if self.proc:
            terminate(self.proc, timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, for reliability tests."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


@contextlib.contextmanager
def broker(data_dir: str | None = None) -> Iterator[str]:
    """KAFKA_BOOTSTRAP when set, else a Kafka container where a Docker engine answers, else a
    local broker started (and stopped) here."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    from infra.containers import choose, kafka_container
    if choose() == "containers":          # a Docker engine answers: testcontainers (infra/containers.py)
        with kafka_container() as bootstrap:
            yield bootstrap
        return
    with KafkaBroker(data_dir=data_dir) as b:
        yield b.bootstrap


@contextlib.contextmanager
def stack(*, data_dir: str | None = None, worker_env: dict[str, str] | None = None,
          log_dir: Path | None = None) -> Iterator[tuple[str, Worker]]:
    """Broker + topics + one worker; everything stopped on exit."""
    with broker(data_dir) as bootstrap:
        asyncio.run(create_topics(bootstrap))
        worker = Worker(bootstrap, env=worker_env, log_path=(log_dir / "worker.log") if log_dir else None)
        worker.start().supervise()
        try:
            yield bootstrap, worker
        finally:
            worker.stop()


@contextlib.contextmanager
def training_process(log_path: Path, clickhouse: Path, interval_s: float,
                     env: dict[str, str] | None = None, model: str = "estimator") -> Iterator[subprocess.Popen]:
    """`chimera train <model> --watch` in its own process ([triton] auto_train, for `chimera up`
    and the demo): torch and the training CPU stay out of the caller; stopped on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "train", model, "--watch", str(interval_s),
                                 "--clickhouse", str(clickhouse)], env={**os.environ, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    try:
        yield proc
    finally:
        terminate(proc, 15)


@contextlib.contextmanager
def api_process(bootstrap: str, log_path: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`chimera api` in its own process (for `chimera up` and the demo; `env`: API_* overrides);
    stopped on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "api"],
                                env={**os.environ, **(env or {}), "KAFKA_BOOTSTRAP": bootstrap},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    try:
        yield proc
    finally:
        terminate(proc, 15)
