"""Run the planner worker in the foreground: `python -m streams.worker` (KAFKA_BOOTSTRAP set)."""
from __future__ import annotations

import sys


def main(loglevel: str = "info") -> None:
    """CHIMERA_METRICS_PORT, when set, serves Prometheus metrics (layer2_*) and the probes
    (/healthz, /readyz: topics/probes.py, fed by the watchdog) on that port."""
    from streams import settings
    from topics import probes
    from streams.planner import build

    app = build(settings.load())
    probes.serve_from_env()
    sys.argv = [sys.argv[0], "worker", "-l", loglevel, "--without-web"]
    app.main()


if __name__ == "__main__":
    main(*sys.argv[1:2])
