"""Where the services of the tests and the demo come from: the project's own launchers
(Kafka's and Neo4j's jars, chdb, the bundled tritonserver: no Docker needed) or, where a
Docker engine answers, testcontainers running the images of docker-compose.yml.

CHIMERA_SERVICES picks: `auto` (the default: containers when an engine answers its ping,
else local), `local`, or `containers` (an error when no engine answers, rather than a
silent fall-back). The engine is the one DOCKER_HOST names, else the default socket.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import socket
from typing import Iterator, Mapping
from urllib.parse import urlparse

MODES = ("auto", "local", "containers")
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
KAFKA_IMAGE = "confluentinc/cp-kafka:7.7.1"


class EngineError(RuntimeError):
    """Containers were asked for and no Docker engine answers."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def engine_url(env: Mapping[str, str] = os.environ) -> str:
    return env.get("DOCKER_HOST") or DEFAULT_ENGINE


def engine_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Docker engine at `url` answers GET /_ping with 200 OK (the docker CLI's
    own liveness check); a client binary without an engine is not enough."""
    u = urlparse(url)
    if u.scheme == "unix":
        conn: http.client.HTTPConnection = _UnixConnection(u.path, timeout)
    elif u.scheme in ("tcp", "http"):
        conn = http.client.HTTPConnection(u.hostname or "localhost", u.port or 2375, timeout=timeout)
    else:
        return False
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read(16).strip() == b"OK"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def choose(env: Mapping[str, str] = os.environ) -> str:
    """`local` or `containers`, from CHIMERA_SERVICES and whether an engine answers."""
    mode = env.get("CHIMERA_SERVICES", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"CHIMERA_SERVICES={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "local":
        return "local"
    answers = engine_answers(engine_url(env))
    if mode == "containers" and not answers:
        raise EngineError(f"CHIMERA_SERVICES=containers but no Docker engine answers at {engine_url(env)}")
    return "containers" if answers else "local"


@contextlib.contextmanager
def kafka_container() -> Iterator[str]:
    """A KRaft broker in a container (testcontainers); yields its bootstrap address."""
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
        yield kafka.get_bootstrap_server()
