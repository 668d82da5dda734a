"""A real Neo4j Community 5.26 (embedded, Bolt on a loopback port), started by the project.

Jars come from Maven Central (`mvn dependency:copy-dependencies` on infra/neo4j/pom.xml) into
the cache once; `Launcher.java` (a single-file Java program) opens the database in a data
folder with the Bolt connector on 127.0.0.1:PORT. The data folder is kept across restarts
(and survives kill -9). `stop()` stops only this process. `NEO4J_URI` points at an external
server instead (see `neo4j_uri_or_start`).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from infra.kafka.broker import check_java
from infra.process import LocalService, cache_root, free_ports, maven_jars

NEO4J_VERSION = "5.26.30"
HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LAUNCHER = HERE / "Launcher.java"
JVM_OPTS = ["-Xmx768m", "-Xms256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]


class Neo4jSetupError(RuntimeError):
    """Java or the jars are missing, or Neo4j would not come up."""


def default_cache_dir() -> Path:
    return cache_root() / f"neo4j-{NEO4J_VERSION}" / "libs"


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Fetch Neo4j's jars once (idempotent: a marker after a complete copy; a lock for parallel calls)."""
    libs = Path(cache_dir) if cache_dir else default_cache_dir()
    check_java()
    return maven_jars(POM, libs, "Neo4j", NEO4J_VERSION, f"neo4j-{NEO4J_VERSION}.jar", Neo4jSetupError)


class Neo4jServer(LocalService):
    """Neo4j with Bolt on 127.0.0.1, as a context manager. data_dir=None: a temp folder removed
    on close() (and __exit__); a given data_dir is kept. `port` defaults to a free one and is kept
    across `stop()`/`start()` so clients can reconnect to the same URI after a restart."""

    name, version, error, env_var = "Neo4j", NEO4J_VERSION, Neo4jSetupError, "NEO4J_URI"
    log_name, tmp_prefix, probe = "neo4j-launcher.log", "chimera-neo4j-", "print NEO4J READY"
    stop_timeout = 30.0

    def __init__(self, data_dir: Path | str | None = None, port: int | None = None, libs: Path | None = None,
                 start_timeout: float = 120.0) -> None:
        super().__init__(data_dir, start_timeout)
        self.port = port
        self.libs = libs

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return self.uri

    def _prepare(self) -> None:
        self.libs = self.libs or ensure_jars()

    def _command(self) -> tuple[list[str], None]:
        self.port = self.port or free_ports(1)[0]
        return [check_java(), *JVM_OPTS, "-cp", f"{self.libs}/*", str(LAUNCHER), str(self.data_dir / "db"),
                str(self.port)], None

    def ready(self) -> bool:
        """The launcher printed NEO4J READY in this start's part of the log."""
        with open(self.log_file, "rb") as f:
            f.seek(self._log_start)
            return b"NEO4J READY" in f.read()


def neo4j_uri_or_start(**kwargs) -> contextlib.AbstractContextManager[str]:
    """`$NEO4J_URI` if set (nothing started), else a local Neo4j for the block."""
    return Neo4jServer.address_or_start(**kwargs)
