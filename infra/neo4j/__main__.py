"""`python -m infra.neo4j fetch` (install step) and `python -m infra.neo4j run` (dev server)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.process import command_line

from .server import Neo4jServer, Neo4jSetupError, ensure_jars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.neo4j")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download Neo4j's jars into the cache")
    f.add_argument("--cache-dir", type=Path)
    r = sub.add_parser("run", help="run Neo4j in the foreground until Ctrl-C")
    r.add_argument("--port", type=int)
    r.add_argument("--data-dir", type=Path, default=Path(".data/neo4j"), help="kept across runs")
    return command_line(p, argv, Neo4jSetupError, lambda a: ensure_jars(a.cache_dir),
                        lambda a: Neo4jServer(data_dir=a.data_dir, port=a.port))


if __name__ == "__main__":
    sys.exit(main())
