"""The automatic choice between testcontainers and the local launchers. This machine has no
Docker engine, so the engine that answers is a FAKE: a socket server that speaks only the two
requests the choice makes through the docker SDK (`GET /version`, `GET /_ping`), on a Unix socket
and on TCP."""
from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from infra.containers import choose, docker_engine


def _reply(status: str, body: bytes, kind: str = "text/plain") -> bytes:
    return (f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


class FakeEngine:
    """FAKE Docker engine: answers /version and /_ping (or `status` to everything), nothing else."""

    def __init__(self, family, address, status: str = "200 OK") -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.status = status
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(4096).decode(errors="replace")
                path = request.split(" ")[1] if " " in request else ""
                if not self.status.startswith("200"):
                    conn.sendall(_reply(self.status, b"no"))
                elif path.endswith("/version"):
                    conn.sendall(_reply(self.status, json.dumps({"ApiVersion": "1.45", "Version": "fake"}).encode(),
                                        "application/json"))
                else:
                    conn.sendall(_reply(self.status, b"OK"))

    def close(self) -> None:
        self.sock.close()


def test_no_engine_here_means_the_local_launchers(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    assert docker_engine(env) is None and choose(env) == "local"
    with pytest.raises(RuntimeError, match="no Docker engine"):
        choose({**env, "CHIMERA_SERVICES": "containers"})


def test_an_engine_on_a_unix_socket_means_testcontainers(tmp_path):
    path = str(tmp_path / "docker.sock")
    engine = FakeEngine(socket.AF_UNIX, path)
    try:
        env = {"DOCKER_HOST": f"unix://{path}"}
        assert docker_engine(env)
        assert choose(env) == "containers"
        assert choose({**env, "CHIMERA_SERVICES": "local"}) == "local"
    finally:
        engine.close()


def test_an_engine_over_tcp_and_one_that_is_not_ok():
    good = FakeEngine(socket.AF_INET, ("127.0.0.1", 0))
    bad = FakeEngine(socket.AF_INET, ("127.0.0.1", 0), status="500 Oops")
    try:
        assert choose({"DOCKER_HOST": f"tcp://127.0.0.1:{good.sock.getsockname()[1]}"}) == "containers"
        assert choose({"DOCKER_HOST": f"tcp://127.0.0.1:{bad.sock.getsockname()[1]}"}) == "local"
        # TLS asked for (as the docker CLI reads it) but the plain-text engine cannot speak it
        tls = {"DOCKER_HOST": f"tcp://127.0.0.1:{good.sock.getsockname()[1]}", "DOCKER_TLS_VERIFY": "1",
               "DOCKER_CERT_PATH": "/nonexistent/certs"}
        assert docker_engine(tls) is None and choose(tls) == "local"
    finally:
        good.close()
        bad.close()


def test_a_bad_mode_is_refused():
    with pytest.raises(ValueError):
        choose({"CHIMERA_SERVICES": "docker"})


# ----------------------------------------------------------------------------- per service

@pytest.fixture
def engine(tmp_path, monkeypatch):
    """DOCKER_HOST on the FAKE engine: the choice says containers (nothing is started here)."""
    path = str(tmp_path / "docker.sock")
    fake = FakeEngine(socket.AF_UNIX, path)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.delenv("CHIMERA_SERVICES", raising=False)
    yield
    fake.close()


def test_without_an_engine_the_fixtures_get_the_local_launchers(tmp_path, monkeypatch):
    from infra import containers
    from infra.neo4j import Neo4jServer
    from infra.tritonserver import TritonServer

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    assert isinstance(containers.neo4j(data_dir=tmp_path), Neo4jServer)
    server = containers.triton(tmp_path, ("estimator",), log_dir=tmp_path / "log")
    assert isinstance(server, TritonServer) and server.models == ["estimator"]
    with containers.stores() as urls:   # chdb and Chroma in process: no URL is set
        assert urls == {} and "CLICKHOUSE_URL" not in os.environ


def test_with_an_engine_the_fixtures_get_containers_of_the_compose_images(engine, tmp_path):
    from infra import containers

    neo = containers.neo4j(data_dir=tmp_path)
    assert isinstance(neo, containers.Neo4jContainer) and not neo.running
    assert neo.image() == containers.compose_service("neo4j")["image"]
    assert neo.environment()["NEO4J_AUTH"] == "none"       # as the local Neo4j: no authentication
    assert containers.ClickHouseContainer().image() == containers.compose_service("clickhouse")["image"]
    assert containers.ChromaContainer().image() == containers.compose_service("chroma")["image"]
    ch = containers.ClickHouseContainer()
    assert ch.environment()["CLICKHOUSE_PASSWORD"] and ch.ports == (8123,)

    triton = containers.triton(tmp_path / "repo", ("embedder", "estimator"), log_dir=tmp_path / "log")
    assert isinstance(triton, containers.TritonContainer)
    assert triton.volumes() == {str((tmp_path / "repo").resolve()): ("/models", "rw")}  # training writes versions
    cmd = triton.command()
    assert cmd[0] == "tritonserver" and "--model-control-mode=explicit" in cmd
    assert [c for c in cmd if c.startswith("--load-model=")] == ["--load-model=embedder", "--load-model=estimator"]
    assert (containers.COMPOSE.parent / containers.compose_service("triton")["build"]["dockerfile"]).is_file()


def test_an_external_store_is_kept_even_with_an_engine(engine, monkeypatch):
    from infra import containers

    monkeypatch.setenv("CLICKHOUSE_URL", "http://elsewhere:8123")
    monkeypatch.setenv("CHROMA_URL", "http://elsewhere:8000")
    with containers.stores() as urls:   # nothing to start: both are set
        assert urls == {} and os.environ["CLICKHOUSE_URL"] == "http://elsewhere:8123"


def test_an_unknown_compose_service_is_a_clear_error():
    from infra import containers

    with pytest.raises(KeyError, match="no service 'nosuch'"):
        containers.compose_service("nosuch")
