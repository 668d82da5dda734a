"""Which way the fixtures start services: testcontainers where a Docker engine answers,
the project's own launchers (infra/kafka, infra/neo4j, chdb, ...) otherwise.

CHIMERA_SERVICES=auto (default) decides by pinging the engine (DOCKER_HOST, else the default
socket); `local` or `containers` force a way (`containers` without an engine is an error).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from typing import Iterator, Mapping
from urllib.parse import urlparse

DEFAULT_HOST = "unix:///var/run/docker.sock"
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"   # testcontainers' Kafka module configures KRaft for this image


def docker_engine(env: Mapping[str, str] = os.environ, timeout: float = 1.0) -> str | None:
    """The engine's address when it answers `GET /_ping` with OK, else None."""
    host = env.get("DOCKER_HOST") or DEFAULT_HOST
    u = urlparse(host)
    try:
        if u.scheme == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(u.path)
        elif u.scheme in ("tcp", "http"):
            s = socket.create_connection((u.hostname, u.port or 2375), timeout=timeout)
        else:
            return None
        with s:
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
    except OSError:
        return None
    head, _, body = reply.partition(b"\r\n\r\n")
    return host if head.split(b" ")[1:2] == [b"200"] and body.strip() == b"OK" else None


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
