"""`python -m infra.neo4j fetch` (install step) and `python -m infra.neo4j run` (dev server)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .server import Neo4jServer, Neo4jSetupError, ensure_jars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.neo4j")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download Neo4j's jars into the cache")
    f.add_argument("--cache-dir", type=Path)
    r = sub.add_parser("run", help="run Neo4j in the foreground until Ctrl-C")
    r.add_argument("--port", type=int)
    r.add_argument("--data-dir", type=Path, default=Path(".data/neo4j"), help="kept across runs")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.cmd == "fetch":
            print(ensure_jars(a.cache_dir))
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with Neo4jServer(data_dir=a.data_dir, port=a.port) as s:
            print(f"NEO4J_URI={s.uri}", flush=True)
            print(f"log: {s.log_file}  (Ctrl-C to stop)", flush=True)
            s.proc.wait()
            print(f"Neo4j exited (rc={s.proc.returncode if s.proc else '?'}):\n{s.tail_log()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except Neo4jSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
