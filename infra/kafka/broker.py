"""A real single-node Apache Kafka (KRaft) broker, started by the project itself.

Why: tests and local runs need a genuine Kafka (transactions, consumer groups, exact
protocol behaviour) on machines without Docker. The broker is the upstream 4.1.1 jar set
fetched from Maven Central, run with the system JVM (>= 17).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

from infra.process import LocalService, cache_root, free_ports, maven_jars, port_open

KAFKA_VERSION = "4.1.1"
HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"
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
    """`<cache root>/kafka-<v>/libs` (infra.process.cache_root)."""
    return cache_root() / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Fetch the broker jars once (Maven Central via `mvn`) and return the libs folder."""
    libs = Path(cache_dir) if cache_dir else default_cache_dir()
    check_java()
    return maven_jars(POM, libs, "Kafka", KAFKA_VERSION, f"kafka_2.13-{KAFKA_VERSION}.jar", KafkaSetupError)


# --------------------------------------------------------------------------- broker

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


class KafkaBroker(LocalService):
    """A single-node KRaft broker+controller on 127.0.0.1, as a context manager.

    data_dir=None uses a temp dir removed on stop(); a given data_dir is kept, so a restart
    on it (formatting is skipped) sees the earlier topics and records. Ports default to free
    ones; pass `port` to keep the bootstrap stable across restarts.
    """

    name, version, error, env_var = "Kafka", KAFKA_VERSION, KafkaSetupError, "KAFKA_BOOTSTRAP"
    log_name, tmp_prefix, probe = "broker.log", "chimera-kafka-", "answer a metadata request"
    exit_stop_timeout = 5.0

    def __init__(self, data_dir: Path | str | None = None, port: int | None = None,
                 controller_port: int | None = None, libs: Path | None = None,
                 start_timeout: float = 60.0, extra_config: dict[str, str] | None = None):
        super().__init__(data_dir, start_timeout)
        self.port = port
        self.controller_port = controller_port
        self.libs = libs
        self.extra_config = dict(extra_config or {})

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return self.bootstrap

    def _write_config(self) -> Path:
        assert self.data_dir is not None
        ports = free_ports(2)
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
        extra = self._format_args()
        cmd = self._java_cmd("kafka.tools.StorageTool", "format", "--ignore-formatted",
                             "-t", _cluster_id(), "-c", str(props), *extra)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:   # the extra arguments may carry credentials: never quoted
            shown = cmd[:len(cmd) - len(extra)] + ["<%d more arguments>" % len(extra)] * bool(extra)
            raise KafkaSetupError(f"formatting Kafka storage failed: {' '.join(shown)}\n"
                                  f"{(res.stdout + res.stderr)[-3000:]}")

    def _format_args(self) -> list[str]:
        """More `kafka-storage format` arguments (a subclass's bootstrap records: SCRAM users)."""
        return []

    def _prepare(self) -> None:
        self.libs = self.libs or ensure_jars()

    def _command(self) -> tuple[list[str], None]:
        """Write server.properties, format the storage (first time); the broker's command."""
        props = self._write_config()
        self._format(props)
        return self._java_cmd("kafka.Kafka", str(props)), None

    def ready(self) -> bool:
        # the port first: a cheap gate that avoids aiokafka's connection-error noise
        return port_open(self.port) and bool(_describe_cluster(self.bootstrap)["brokers"])

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM our own JVM (clean shutdown), SIGKILL after `timeout` (15 s); drop a temp dir
        (and the ports it was started on)."""
        super().stop(timeout)
        if self._drop_tmp():
            self.port = self.controller_port = None


# --------------------------------------------------------------------------- helpers

def kafka_cluster(**broker_kwargs) -> contextlib.AbstractContextManager[str]:
    """Yield a bootstrap string: `$KAFKA_BOOTSTRAP` if set (nothing started), else a
    local broker that lives for the duration of the block."""
    return KafkaBroker.address_or_start(**broker_kwargs)


def bootstrap_or_start(**broker_kwargs) -> tuple[str, KafkaBroker | None]:
    """Non-context form: `($KAFKA_BOOTSTRAP, None)` or `(bootstrap, started broker)`;
    the caller stops the broker (atexit does it otherwise)."""
    return KafkaBroker.external_or_start(**broker_kwargs)
