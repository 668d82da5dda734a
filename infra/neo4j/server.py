"""A real Neo4j Community 5.26 (embedded, Bolt on a loopback port), started by the project.

Jars come from Maven Central (`mvn dependency:copy-dependencies` on infra/neo4j/pom.xml) into
the cache once; `Launcher.java` (a single-file Java program) opens the database in a data
folder with the Bolt connector on 127.0.0.1:PORT. The data folder is kept across restarts
(and survives kill -9). `stop()` stops only this process. `NEO4J_URI` points at an external
server instead (see `neo4j_uri_or_start`).
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterator

from infra.kafka.broker import check_java, die_with_parent

log = logging.getLogger(__name__)

NEO4J_VERSION = "5.26.30"
HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
LAUNCHER = HERE / "Launcher.java"
MARKER = ".complete"
JVM_OPTS = ["-Xmx768m", "-Xms256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]


class Neo4jSetupError(RuntimeError):
    """Java or the jars are missing, or Neo4j would not come up."""


def default_cache_dir() -> Path:
    checkout = (REPO_ROOT / "pyproject.toml").exists()
    root = Path(os.environ.get("CHIMERA_CACHE")
                or (REPO_ROOT / ".cache" if checkout else Path.home() / ".cache" / "chimera"))
    return root / f"neo4j-{NEO4J_VERSION}" / "libs"


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Fetch Neo4j's jars once (idempotent: a marker after a complete copy; a lock for parallel calls)."""
    libs = Path(cache_dir) if cache_dir else default_cache_dir()
    check_java()
    if (libs / MARKER).exists():
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / f".{libs.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / MARKER).exists():
            return libs
        mvn = shutil.which("mvn")
        cmd = [mvn or "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}"]
        if not mvn:
            raise Neo4jSetupError(f"Maven (`mvn`) is not on PATH; needed to run: {' '.join(cmd)}")
        log.info("fetching Neo4j %s jars into %s", NEO4J_VERSION, libs)
        res = subprocess.run(cmd, capture_output=True, text=True)
        jars = sorted(p.name for p in libs.glob("*.jar"))
        if res.returncode != 0 or f"neo4j-{NEO4J_VERSION}.jar" not in jars:
            raise Neo4jSetupError(f"fetching Neo4j jars failed (rc={res.returncode}): {' '.join(cmd)}\n"
                                  f"{(res.stdout + res.stderr)[-3000:]}")
        tmp = libs / f"{MARKER}.tmp"
        tmp.write_text("\n".join([NEO4J_VERSION, *jars]) + "\n")
        os.replace(tmp, libs / MARKER)
    return libs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Neo4jServer:
    """Neo4j with Bolt on 127.0.0.1, as a context manager. data_dir=None: a temp folder removed
    on stop(); a given data_dir is kept. `port` defaults to a free one and is kept across
    `stop()`/`start()` so clients can reconnect to the same URI after a restart."""

    def __init__(self, data_dir: Path | str | None = None, port: int | None = None, libs: Path | None = None,
                 start_timeout: float = 120.0) -> None:
        self.data_dir = Path(data_dir) if data_dir else None
        self.port = port
        self.libs = libs
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        self._tmp: str | None = None
        self._logf = None

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "neo4j-launcher.log"

    def tail_log(self, n: int = 30) -> str:
        with contextlib.suppress(OSError), open(self.log_file, errors="replace") as f:
            return "".join(deque(f, n))
        return "(no log)"

    def start(self) -> "Neo4jServer":
        if self.proc is not None:
            return self
        t0 = time.monotonic()
        self.libs = self.libs or ensure_jars()
        if self.data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="chimera-neo4j-")
            self.data_dir = Path(self._tmp)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        self._logf = open(self.log_file, "ab")
        log_start = self.log_file.stat().st_size
        cmd = [check_java(), *JVM_OPTS, "-cp", f"{self.libs}/*", str(LAUNCHER), str(self.data_dir / "db"),
               str(self.port)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
                                     start_new_session=True,
                                     preexec_fn=die_with_parent if threading.current_thread() is threading.main_thread()
                                     else None)
        _live.add(self)
        try:
            self._wait_ready(t0 + self.start_timeout, log_start)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("Neo4j %s up at %s in %.1fs (pid %d, data %s)", NEO4J_VERSION, self.uri, self.start_seconds,
                 self.proc.pid, self.data_dir)
        return self

    def _wait_ready(self, deadline: float, log_start: int) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Neo4jSetupError(f"Neo4j exited early (rc={self.proc.returncode}); last log lines:\n"
                                      f"{self.tail_log()}")
            with open(self.log_file, "rb") as f:
                f.seek(log_start)
                if b"NEO4J READY" in f.read():
                    return
            time.sleep(0.1)
        raise Neo4jSetupError(f"Neo4j did not get ready within {self.start_timeout:.0f}s; last log lines:\n"
                              f"{self.tail_log()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM our own JVM (clean shutdown), SIGKILL after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _live.discard(self)
        if self._logf:
            self._logf.close()
            self._logf = None

    def kill(self) -> None:
        """SIGKILL our own JVM: a crash (the data folder is kept; start() again recovers it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.stop()

    def close(self) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = self.data_dir = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "Neo4jServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


_live: set[Neo4jServer] = set()


@atexit.register
def _stop_all() -> None:
    for s in list(_live):
        s.stop(timeout=10)


@contextlib.contextmanager
def neo4j_uri_or_start(**kwargs) -> Iterator[str]:
    """`$NEO4J_URI` if set (nothing started), else a local Neo4j for the block."""
    if os.environ.get("NEO4J_URI"):
        yield os.environ["NEO4J_URI"]
        return
    with Neo4jServer(**kwargs) as server:
        yield server.uri
