"""Run the planner worker in the foreground: `python -m streams.worker` (KAFKA_BOOTSTRAP set)."""
from __future__ import annotations

import sys


def main(loglevel: str = "info") -> None:
    from streams.app import app  # import reads KAFKA_BOOTSTRAP and chimera.toml

    sys.argv = [sys.argv[0], "worker", "-l", loglevel, "--without-web"]
    app.main()


if __name__ == "__main__":
    main(*sys.argv[1:2])
