"""Run the planner worker in the foreground: `python -m streams.worker` (KAFKA_BOOTSTRAP set)."""
from __future__ import annotations

import os
import sys


def main(loglevel: str = "info") -> None:
    """CHIMERA_METRICS_PORT, when set, serves Prometheus metrics (layer2_*) on that port."""
    from prometheus_client import start_http_server

    from streams import settings
    from streams.planner import build

    app = build(settings.load())
    if os.environ.get("CHIMERA_METRICS_PORT"):
        start_http_server(int(os.environ["CHIMERA_METRICS_PORT"]), addr=os.environ.get("CHIMERA_METRICS_ADDR", "127.0.0.1"))
    sys.argv = [sys.argv[0], "worker", "-l", loglevel, "--without-web"]
    app.main()


if __name__ == "__main__":
    main(*sys.argv[1:2])
