"""A real single-node Apache Kafka (KRaft) broker, started by the project itself.

Why: tests and local runs need a genuine Kafka (transactions, consumer groups, exact
protocol behaviour) on machines without Docker. The broker is the upstream 4.1.1 jar set
fetched from Maven Central, run with the system JVM (>= 17).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"
MARKER = ".complete"
# Small heap, serial GC and C1-only JIT: a test broker on a 2-core box should start fast
# and stay out of the way, not reach peak throughput.
JVM_OPTS = [
    "-Xmx512m", "-Xms256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-Xshare:auto", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
]


class KafkaSetupError(RuntimeError):
    """Java or the jars are missing, or the broker would not come up."""


# --------------------------------------------------------------------------- jars

def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaSetupError("Kafka needs Java >= 17: no `java` on PATH (or in $JAVA_HOME/bin)")
    return java


def check_java() -> str:
    """Return the java binary, or raise if it is older than 17 (Kafka 4 needs 17)."""
    java = _java()
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        raise KafkaSetupError(f"cannot read the Java version from `{java} -version`: {out!r}")
    major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
    if major < 17:
        raise KafkaSetupError(f"Kafka {KAFKA_VERSION} needs Java >= 17; {java} is Java {major}")
    return java


def default_cache_dir() -> Path:
    """`$CHIMERA_CACHE/kafka-<v>/libs`, else `<repo>/.cache/kafka-<v>/libs` (git-ignored);
    `~/.cache/chimera` when running from an installed package rather than a checkout."""
    checkout = (REPO_ROOT / "pyproject.toml").exists()
    root = Path(os.environ.get("CHIMERA_CACHE")
                or (REPO_ROOT / ".cache" if checkout else Path.home() / ".cache" / "chimera"))
    return root / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Fetch the broker jars once (Maven Central via `mvn`) and return the libs folder.

    Idempotent: a marker written atomically after a successful copy short-circuits later
    calls; a file lock keeps parallel test processes from fetching at the same time.
    """
    libs = Path(cache_dir) if cache_dir else default_cache_dir()
    check_java()
    if (libs / MARKER).exists():
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / f".{libs.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / MARKER).exists():  # another process finished while we waited
            return libs
        mvn = shutil.which("mvn")
        cmd = [mvn or "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}"]
        if not mvn:
            raise KafkaSetupError(f"Maven (`mvn`) is not on PATH; needed to run: {' '.join(cmd)}")
        log.info("fetching Kafka %s jars into %s", KAFKA_VERSION, libs)
        res = subprocess.run(cmd, capture_output=True, text=True)
        jars = sorted(p.name for p in libs.glob("*.jar"))
        if res.returncode != 0 or f"kafka_2.13-{KAFKA_VERSION}.jar" not in jars:
            raise KafkaSetupError(
                f"fetching Kafka jars failed (rc={res.returncode}): {' '.join(cmd)}\n"
                f"{(res.stdout + res.stderr)[-3000:]}")
        tmp = libs / f"{MARKER}.tmp"
        tmp.write_text("\n".join([KAFKA_VERSION, *jars]) + "\n")
        os.replace(tmp, libs / MARKER)
    return libs


# --------------------------------------------------------------------------- broker

def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (sockets held together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def _cluster_id() -> str:
    """Kafka's Uuid text form: 22 chars url-safe base64, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _describe_cluster(bootstrap: str) -> dict:
    """One metadata round-trip with aiokafka, on a private event loop in a thread so it
    works whether or not the caller is itself inside a running loop."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def go() -> dict:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            return await admin.describe_cluster()
        finally:
            await admin.close()

    box: dict = {}

    def run() -> None:
        try:
            box["ok"] = asyncio.run(go())
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            box["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    if "ok" not in box:
        raise box.get("err") or TimeoutError("describe_cluster timed out")
    return box["ok"]


def die_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies (covers a SIGKILLed test run)."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class KafkaBroker:
    """A single-node KRaft broker+controller on 127.0.0.1, as a context manager.

    data_dir=None uses a temp dir removed on stop(); a given data_dir is kept, so a restart
    on it (formatting is skipped) sees the earlier topics and records. Ports default to free
    ones; pass `port` to keep the bootstrap stable across restarts.
    """

    def __init__(self, data_dir: Path | str | None = None, port: int | None = None,
                 controller_port: int | None = None, libs: Path | None = None,
                 start_timeout: float = 60.0, extra_config: dict[str, str] | None = None):
        self.data_dir = Path(data_dir) if data_dir else None
        self.port = port
        self.controller_port = controller_port
        self.libs = libs
        self.start_timeout = start_timeout
        self.extra_config = dict(extra_config or {})
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        self._tmp: str | None = None
        self._logf = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "broker.log"

    def _write_config(self) -> Path:
        assert self.data_dir is not None
        ports = _free_ports(2)
        self.port = self.port or ports[0]
        self.controller_port = self.controller_port or (ports[1] if ports[1] != self.port else ports[0])
        conf = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data_dir / "kraft-logs"),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",  # creating 50 partitions costs start-up time
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",  # Chimera creates its topics explicitly
            "num.partitions": "1",
            **self.extra_config,
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in conf.items()))
        return path

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [check_java(), *JVM_OPTS, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "-cp", f"{self.libs}/*", main, *args]

    def _format(self, props: Path) -> None:
        if (self.data_dir / "kraft-logs" / "meta.properties").exists():
            return  # already formatted: keep cluster id and data
        cmd = self._java_cmd("kafka.tools.StorageTool", "format", "--ignore-formatted",
                             "-t", _cluster_id(), "-c", str(props))
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise KafkaSetupError(f"formatting Kafka storage failed: {' '.join(cmd)}\n"
                                  f"{(res.stdout + res.stderr)[-3000:]}")

    def tail_log(self, n: int = 30) -> str:
        with contextlib.suppress(OSError), open(self.log_file, errors="replace") as f:
            return "".join(deque(f, n))
        return "(no broker log)"

    def start(self) -> "KafkaBroker":
        """Format (first time), launch the JVM, and wait until a metadata request works."""
        if self.proc is not None:
            return self
        t0 = time.monotonic()
        self.libs = self.libs or ensure_jars()
        if self.data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="chimera-kafka-")
            self.data_dir = Path(self._tmp)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            props = self._write_config()
            self._format(props)
            self._logf = open(self.log_file, "ab")
            self.proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(props)),
                stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to us; stop() decides when it ends
                preexec_fn=die_with_parent if threading.current_thread() is threading.main_thread() else None,
            )
            _live.add(self)
            self._wait_ready(t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("Kafka %s up at %s in %.1fs (pid %d, data %s)", KAFKA_VERSION,
                 self.bootstrap, self.start_seconds, self.proc.pid, self.data_dir)
        return self

    def _wait_ready(self, deadline: float) -> None:
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KafkaSetupError(f"Kafka exited early (rc={self.proc.returncode}); "
                                      f"last log lines:\n{self.tail_log()}")
            if _port_open(self.port):  # cheap gate: avoids aiokafka's connection-error noise
                try:
                    if _describe_cluster(self.bootstrap)["brokers"]:
                        return
                except Exception as e:  # noqa: BLE001 - retried until the deadline
                    last = e
            time.sleep(0.1)
        raise KafkaSetupError(f"Kafka did not answer a metadata request at {self.bootstrap} "
                              f"within {self.start_timeout:.0f}s (last error: {last!r}); "
                              f"last log lines:\n{self.tail_log()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM our own JVM (clean shutdown), SIGKILL after `timeout`; drop a temp dir."""
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
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = self.data_dir = None
            self.port = self.controller_port = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_live: set[KafkaBroker] = set()


@atexit.register
def _stop_all() -> None:
    for b in list(_live):
        b.stop(timeout=5)


# --------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def kafka_cluster(**broker_kwargs) -> Iterator[str]:
    """Yield a bootstrap string: `$KAFKA_BOOTSTRAP` if set (nothing started), else a
    local broker that lives for the duration of the block."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with KafkaBroker(**broker_kwargs) as broker:
        yield broker.bootstrap


def bootstrap_or_start(**broker_kwargs) -> tuple[str, KafkaBroker | None]:
    """Non-context form: `($KAFKA_BOOTSTRAP, None)` or `(bootstrap, started broker)`;
    the caller stops the broker (atexit does it otherwise)."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        return external, None
    broker = KafkaBroker(**broker_kwargs).start()
    return broker.bootstrap, broker
