"""A sink process answering JSON POSTs on loopback, found through a marker file.

Some stores let one process own their folder (chdb, Chroma's persistent client): the sink's
process then answers reads for everybody else. It listens on a free loopback port and
writes `{"url", "pid"}` into a marker file beside the data, which readers look up.
"""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable


class LoopbackServer:
    """`answer(body) -> dict` serves POST `path`; an exception is answered 400 with its text."""

    def __init__(self, answer: Callable[[dict], dict], marker: Path, path: str, name: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    out, code = json.dumps(answer(body), default=str).encode(), 200
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    out, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode(), 400
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker = marker
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=name, daemon=True)

    def start(self) -> "LoopbackServer":
        self.thread.start()
        tmp = self.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
        os.replace(tmp, self.marker)
        return self

    def stop(self) -> None:
        try:
            if json.loads(self.marker.read_text()).get("pid") == os.getpid():
                self.marker.unlink()
        except (OSError, ValueError):
            pass
        self.httpd.shutdown()
        self.httpd.server_close()
