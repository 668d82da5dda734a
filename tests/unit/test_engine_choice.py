"""Which services the fixtures start: local launchers, or testcontainers where a Docker engine
answers. No engine runs on these machines, so the "engine answers" case uses a FAKE engine: a
unix socket that answers the Docker API's GET /_ping like dockerd (the only call the choice
makes). The real client paths (no socket, a socket that is not an engine) are real."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from infra import engine


class _Ping(BaseHTTPRequestHandler):
    reply = b"OK"

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.reply if self.path == "/_ping" else b"not found"
        self.send_response(200 if self.path == "/_ping" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _UnixHTTPServer(HTTPServer):
    address_family = socket.AF_UNIX

    def server_bind(self):
        self.socket.bind(self.server_address)

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("fake-engine", 0)


@pytest.fixture
def fake_engine(tmp_path: Path):
    """FAKE Docker engine: answers /_ping only."""
    path = str(tmp_path / "docker.sock")
    server = _UnixHTTPServer(path, _Ping)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"unix://{path}"
    server.shutdown()
    server.server_close()


def test_no_engine_means_the_local_launchers(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/absent.sock"}
    assert engine.choose(env) == "local"
    assert engine.choose({**env, "CHIMERA_SERVICES": "auto"}) == "local"


def test_a_socket_that_is_not_an_engine_is_not_taken_for_one(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp_path / "mute.sock"))
    s.listen(1)            # accepts, never answers: the ping times out
    try:
        assert not engine.engine_answers(f"unix://{tmp_path}/mute.sock", timeout=0.3)
    finally:
        s.close()


def test_an_answering_engine_means_containers(fake_engine):
    assert engine.engine_answers(fake_engine)
    assert engine.choose({"DOCKER_HOST": fake_engine}) == "containers"


def test_local_is_kept_when_asked_for_even_with_an_engine(fake_engine):
    assert engine.choose({"DOCKER_HOST": fake_engine, "CHIMERA_SERVICES": "local"}) == "local"


def test_containers_without_an_engine_is_a_clear_error_not_a_silent_fallback(tmp_path):
    with pytest.raises(engine.EngineError, match="no Docker engine answers"):
        engine.choose({"DOCKER_HOST": f"unix://{tmp_path}/absent.sock", "CHIMERA_SERVICES": "containers"})


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="CHIMERA_SERVICES"):
        engine.choose({"CHIMERA_SERVICES": "kubernetes"})

