"""`python -m infra.kafka fetch` (install step) and `python -m infra.kafka run` (dev broker)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.process import command_line

from .broker import KafkaBroker, KafkaSetupError, ensure_jars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.kafka")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the broker jars into the cache")
    f.add_argument("--cache-dir", type=Path)
    r = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    r.add_argument("--port", type=int)
    r.add_argument("--data-dir", type=Path, help="kept across runs (default: temp dir)")
    return command_line(p, argv, KafkaSetupError, lambda a: ensure_jars(a.cache_dir),
                        lambda a: KafkaBroker(data_dir=a.data_dir, port=a.port))


if __name__ == "__main__":
    sys.exit(main())
