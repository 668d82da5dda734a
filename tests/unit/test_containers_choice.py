"""The automatic choice between testcontainers and the local launchers. This machine has no
Docker engine, so the engine that answers is a FAKE: a socket server that speaks only Docker's
`GET /_ping` (the one thing the choice asks), on a Unix socket and on TCP."""
from __future__ import annotations

import socket
import threading

import pytest

from infra.containers import choose, docker_engine


class FakeEngine:
    """FAKE Docker engine: answers /_ping with 200 OK (or `reply`), nothing else."""

    def __init__(self, family, address, reply: bytes = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK") -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(4)
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(self.reply)

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
        assert docker_engine(env) == env["DOCKER_HOST"]
        assert choose(env) == "containers"
        assert choose({**env, "CHIMERA_SERVICES": "local"}) == "local"
    finally:
        engine.close()


def test_an_engine_over_tcp_and_one_that_is_not_ok():
    good = FakeEngine(socket.AF_INET, ("127.0.0.1", 0))
    bad = FakeEngine(socket.AF_INET, ("127.0.0.1", 0), reply=b"HTTP/1.0 500 Oops\r\n\r\nno")
    try:
        assert choose({"DOCKER_HOST": f"tcp://127.0.0.1:{good.sock.getsockname()[1]}"}) == "containers"
        assert choose({"DOCKER_HOST": f"tcp://127.0.0.1:{bad.sock.getsockname()[1]}"}) == "local"
    finally:
        good.close()
        bad.close()


def test_a_bad_mode_is_refused():
    with pytest.raises(ValueError):
        choose({"CHIMERA_SERVICES": "docker"})
