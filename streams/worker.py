"""Run the planner worker in the foreground: `python -m streams.worker` (KAFKA_BOOTSTRAP set)."""
from __future__ import annotations

import sys


def main(loglevel: str = "info") -> None:
    """CHIMERA_METRICS_PORT, when set, serves Prometheus metrics (layer2_*) on that port."""
    import os

    from prometheus_client import start_http_server

    from streams.app import app  # import reads KAFKA_BOOTSTRAP and chimera.toml

    if os.environ.get("CHIMERA_METRICS_PORT"):
        start_http_server(int(os.environ["CHIMERA_METRICS_PORT"]), addr="127.0.0.1")

    sys.argv = [sys.argv[0], "worker", "-l", loglevel, "--without-web"]
    app.main()


if __name__ == "__main__":
    main(*sys.argv[1:2])
