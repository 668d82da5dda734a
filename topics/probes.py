"""/metrics, /healthz and /readyz on one port (CHIMERA_METRICS_PORT) for every worker kind.

Kubernetes probes ask the process what it can honestly say about itself: liveness, that its
loop still turns (a restart would help); readiness, that it joined its consumer group and can
reach its store (a restart would not help: wait). Each component registers checks that read
facts it already keeps (the planner's watchdog, the executor's loop and assignment, the sinks'
runners); a check returns None when fine, else the reason, which the probe's 503 body names.
Here, beside tracing and security, because every process kind (the executor included, which
imports only processors/ and topics/) serves it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from socketserver import ThreadingMixIn
from typing import Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

log = logging.getLogger(__name__)
Check = Callable[[], Optional[str]]

_live: dict[str, Check] = {}
_ready: dict[str, Check] = {}
NOT_STARTED = "no component registered readiness yet (starting)"
LIVENESS, READINESS = "/healthz", "/readyz"   # the paths infra/k8s's probes ask


def register(name: str, *, live: Check | None = None, ready: Check | None = None) -> None:
    """Add (or replace) `name`'s checks; one process may hold several components (the sinks)."""
    if live is not None:
        _live[name] = live
    if ready is not None:
        _ready[name] = ready


def unregister(name: str, live: Check | None = None) -> None:
    """Remove `name`'s checks; with `live`, only if they are still the ones registered with it
    (a newer instance of the component may have replaced them)."""
    if live is not None and _live.get(name) != live:
        return
    _live.pop(name, None)
    _ready.pop(name, None)


def _run(checks: dict[str, Check]) -> list[str]:
    reasons = []
    for name, check in list(checks.items()):
        try:
            why = check()
        except Exception as exc:  # noqa: BLE001 - a check that fails says so, it does not kill the server
            why = f"check failed: {type(exc).__name__}: {exc}"
        if why:
            reasons.append(f"{name}: {why}")
    return reasons


def liveness() -> list[str]:
    """Why the process should be restarted ([] when live)."""
    return _run(_live)


def readiness() -> list[str]:
    """Why the process is not ready ([] when ready): not live, or a component not ready."""
    return liveness() + (_run(_ready) if _ready else [NOT_STARTED])


def app(environ, start_response):
    """WSGI: /healthz and /readyz as JSON, anything else to prometheus_client's /metrics app."""
    path = environ.get("PATH_INFO", "")
    if path not in (LIVENESS, READINESS):
        return _metrics(environ, start_response)
    reasons = liveness() if path == LIVENESS else readiness()
    ok = not reasons
    body = json.dumps({"status": ("live" if path == LIVENESS else "ready") if ok else
                       ("unhealthy" if path == LIVENESS else "not ready"),
                       "components": sorted(_live | _ready), "reasons": reasons}).encode()
    start_response("200 OK" if ok else "503 Service Unavailable",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


_metrics = make_wsgi_app()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:   # probes every few seconds: not worth a log line each
        pass


def serve(port: int, addr: str = "127.0.0.1") -> _Server:
    """Serve `app` in a daemon thread; returns the server (`.shutdown()` stops it)."""
    server = make_server(addr, port, app, _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server


def serve_from_env(env=os.environ) -> _Server | None:
    """The one reader of CHIMERA_METRICS_PORT / CHIMERA_METRICS_ADDR: serve when the port is set."""
    if not env.get("CHIMERA_METRICS_PORT"):
        return None
    return serve(int(env["CHIMERA_METRICS_PORT"]), env.get("CHIMERA_METRICS_ADDR", "127.0.0.1"))
