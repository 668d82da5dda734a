"""Which way the fixtures start services: testcontainers where a Docker engine answers,
the project's own launchers (infra/kafka, infra/neo4j, chdb, ...) otherwise.

CHIMERA_SERVICES=auto (default) decides by pinging the engine (DOCKER_HOST, else the default
socket); `local` or `containers` force a way (`containers` without an engine is an error).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping, MutableMapping

KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"   # testcontainers' Kafka module configures KRaft for this image


def docker_engine(env: Mapping[str, str] = os.environ, timeout: float = 2.0) -> str | None:
    """The engine's address when it answers a ping, else None. The docker SDK (what
    testcontainers drives) reads the address as the containers will: DOCKER_HOST (unix, tcp,
    ssh), DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, else the default socket."""
    try:
        import docker
        client = docker.from_env(environment=dict(env), timeout=timeout)
    except Exception:  # noqa: BLE001 - no engine, no SDK, or an address it cannot use: the launchers
        return None
    try:
        return client.api.base_url if client.ping() else None
    except Exception:  # noqa: BLE001
        return None
    finally:
        client.close()


def choose(env: Mapping[str, str] = os.environ) -> str:
    """`containers` or `local`."""
    mode = env.get("CHIMERA_SERVICES", "auto")
    if mode not in ("auto", "local", "containers"):
        raise ValueError(f"CHIMERA_SERVICES must be auto, local or containers, not {mode!r}")
    if mode == "local":
        return "local"
    engine = docker_engine(env)
    has_tc = importlib.util.find_spec("testcontainers") is not None
    if mode == "containers" and not (engine and has_tc):
        raise RuntimeError("CHIMERA_SERVICES=containers but " + ("no Docker engine answers" if not engine
                                                                 else "testcontainers is not installed"))
    return "containers" if engine and has_tc else "local"


@contextlib.contextmanager
def kafka_container() -> Iterator[str]:
    """A Kafka (KRaft) container for the session; its bootstrap address."""
    from testcontainers.kafka import KafkaContainer
    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


# ----------------------------------------------------------------------------- the other services

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


@functools.lru_cache(maxsize=None)
def compose_service(name: str) -> dict:
    """A service of docker-compose.yml: the one place that names the images and their settings."""
    import yaml
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    if name not in services:
        raise KeyError(f"docker-compose.yml has no service {name!r}")
    return services[name]


class ContainerService:
    """A service in a testcontainers container, with the local launchers' face (infra/process.py
    LocalService): `start()` waits until `ready()`, `stop()` stops the container and keeps it
    (`start()` again restarts it on the same host ports, as a launcher keeps its port across a
    restart), `kill()` is a crash, `close()` removes it; a context manager. A subclass names its
    compose service (image and environment), its container ports, `address` and `ready()`, and
    may give a command and volumes: everything but the start is plain data, testable here."""

    name = "container"
    compose = ""                         # the docker-compose.yml service it runs
    ports: tuple[int, ...] = ()          # container ports, each bound to a free host port
    poll_s = 0.5

    def __init__(self, start_timeout: float = 180.0) -> None:
        self.start_timeout = start_timeout
        self.host_ports: dict[int, int] = {}
        self.host = "127.0.0.1"
        self.start_seconds: float | None = None
        self._container = None

    # ------------------------------------------------------------ what a service gives
    def image(self) -> str:
        return compose_service(self.compose)["image"]

    def environment(self) -> dict[str, str]:
        env = compose_service(self.compose).get("environment") or {}
        return {str(k): str(v) for k, v in (env.items() if isinstance(env, dict) else
                                            (e.split("=", 1) for e in env))}

    def command(self) -> list[str] | None:
        """None: the image's own."""
        return None

    def volumes(self) -> dict[str, tuple[str, str]]:
        """host folder -> (container folder, mode)."""
        return {}

    @property
    def address(self) -> str:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def port(self, container_port: int) -> int:
        return self.host_ports[container_port]

    # ------------------------------------------------------------ the shared lifecycle
    def start(self):
        if self.running:
            return self
        t0 = time.monotonic()
        if self._container is None:
            from testcontainers.core.container import DockerContainer

            from infra.process import free_ports
            self.host_ports = dict(zip(self.ports, free_ports(len(self.ports))))
            c = DockerContainer(self.image())
            for k, v in self.environment().items():
                c.with_env(k, v)
            for inner, outer in self.host_ports.items():
                c.with_bind_ports(inner, outer)
            for host, (inner, mode) in self.volumes().items():
                c.with_volume_mapping(host, inner, mode)
            if self.command():
                c.with_command(self.command())
            self._container = c.start()
            self.host = self._container.get_container_host_ip()
        else:
            self._container.get_wrapped_container().start()
        self._wait_ready(t0 + self.start_timeout)
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        from infra.process import poll_ready
        ok, last = poll_ready(self.ready, deadline, self.poll_s)
        if ok:
            return
        raise RuntimeError(f"{self.name} container did not get ready at {self.address} within "
                           f"{self.start_timeout:.0f}s (last error: {last!r}); logs:\n{self.logs()}")

    def logs(self, n: int = 40) -> str:
        if self._container is None:
            return "(no container)"
        out, err = self._container.get_logs()
        return "\n".join((out + err).decode(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 15.0) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.get_wrapped_container().stop(timeout=int(timeout))

    def kill(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.get_wrapped_container().kill()

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.stop()   # testcontainers' stop removes the container and its volumes

    @property
    def running(self) -> bool:
        if self._container is None:
            return False
        with contextlib.suppress(Exception):
            wrapped = self._container.get_wrapped_container()
            wrapped.reload()
            return wrapped.status == "running"
        return False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class Neo4jContainer(ContainerService):
    """Neo4j Community, authentication off as in compose (the local launcher's Neo4j has none)."""

    name, compose, ports = "Neo4j", "neo4j", (7687,)

    @property
    def uri(self) -> str:
        return f"bolt://{self.host}:{self.port(7687)}"

    @property
    def address(self) -> str:
        return self.uri

    def ready(self) -> bool:
        import neo4j
        with neo4j.GraphDatabase.driver(self.uri, auth=None, connection_timeout=3) as driver:
            driver.verify_connectivity()
        return True


class ClickHouseContainer(ContainerService):
    """ClickHouse server over HTTP (what clickhouse-connect speaks): CLICKHOUSE_URL."""

    name, compose, ports = "ClickHouse", "clickhouse", (8123,)

    def environment(self) -> dict[str, str]:
        # compose's user, with a literal password (compose interpolates ${CLICKHOUSE_PASSWORD:-...})
        return {**super().environment(), "CLICKHOUSE_PASSWORD": "chimera"}

    @property
    def address(self) -> str:
        return f"http://chimera:chimera@{self.host}:{self.port(8123)}"

    def ready(self) -> bool:
        import clickhouse_connect
        client = clickhouse_connect.get_client(dsn=self.address, connect_timeout=3)
        try:
            return client.command("SELECT 1") == 1
        finally:
            client.close()


class ChromaContainer(ContainerService):
    """Chroma's server: CHROMA_URL."""

    name, compose, ports = "Chroma", "chroma", (8000,)

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port(8000)}"

    def ready(self) -> bool:
        import urllib.request
        with urllib.request.urlopen(f"{self.address}/api/v2/heartbeat", timeout=3) as r:
            return r.status == 200


class TritonContainer(ContainerService):
    """NVIDIA's Triton image with the models' Python dependencies (infra/tritonserver/Dockerfile,
    as compose builds it), serving the given repository folder (mounted read-write: training
    writes new versions into it and asks the server to load them)."""

    name, compose, ports = "tritonserver", "triton", (8001, 8000)
    tag = "chimera-triton:test"

    def __init__(self, repository: Path | str, models: Iterable[str] = (), start_timeout: float = 600.0,
                 **_local_only) -> None:
        super().__init__(start_timeout)
        self.repository = Path(repository).resolve()
        self.models = list(models)

    def image(self) -> str:
        build = compose_service(self.compose)["build"]
        return _built(str(COMPOSE.parent / build.get("context", ".")), build["dockerfile"], self.tag)

    def volumes(self) -> dict[str, tuple[str, str]]:
        return {str(self.repository): ("/models", "rw")}

    def command(self) -> list[str]:
        return ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit",
                "--strict-readiness=true", "--exit-on-error=false", *(f"--load-model={m}" for m in self.models)]

    @property
    def url(self) -> str:
        """host:port of the gRPC endpoint (what TRITON_URL holds)."""
        return f"{self.host}:{self.port(8001)}"

    @property
    def address(self) -> str:
        return self.url

    def ready(self) -> bool:
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(self.url)
        try:
            return client.is_server_ready() and all(client.is_model_ready(m) for m in self.models)
        finally:
            client.close()


@functools.lru_cache(maxsize=None)
def _built(context: str, dockerfile: str, tag: str) -> str:
    """Build an image once per process (Docker's layer cache makes later sessions quick)."""
    from testcontainers.core.image import DockerImage
    DockerImage(path=context, dockerfile_path=dockerfile, tag=tag, clean_up=False).build()
    return tag


# ----------------------------------------------------------------------------- the choice, per service

def neo4j(data_dir: Path | str | None = None, **kwargs):
    """A Neo4j for a fixture: a container where an engine answers, else the local launcher."""
    if choose() == "containers":
        return Neo4jContainer()
    from infra.neo4j import Neo4jServer
    return Neo4jServer(data_dir=data_dir, **kwargs)


def triton(repository: Path | str, models: Iterable[str] = (), **kwargs):
    """A tritonserver for a fixture: a container where an engine answers, else the local launcher."""
    if choose() == "containers":
        return TritonContainer(repository, models, **kwargs)
    from infra.tritonserver import TritonServer
    return TritonServer(repository, models=models, **kwargs)


STORES = {"CLICKHOUSE_URL": ClickHouseContainer, "CHROMA_URL": ChromaContainer}


@contextlib.contextmanager
def stores(env: MutableMapping[str, str] = os.environ) -> Iterator[dict[str, str]]:
    """ClickHouse and Chroma servers in containers for the block, their URLs set in `env` (what
    the sinks read) and removed after; locally nothing: the sinks use the engines in process
    (chdb, Chroma's PersistentClient) on the caller's folders. Yields the URLs set."""
    wanted = {var: cls for var, cls in STORES.items() if not env.get(var)}   # an external server stays
    if not wanted or choose(env) != "containers":
        yield {}
        return
    with contextlib.ExitStack() as stack:
        urls = {var: stack.enter_context(cls()).address for var, cls in wanted.items()}
        before = {var: env.get(var) for var in urls}
        env.update(urls)
        try:
            yield urls
        finally:
            for var, value in before.items():
                if value is None:
                    env.pop(var, None)
                else:
                    env[var] = value
