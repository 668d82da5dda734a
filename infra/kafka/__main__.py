"""`python -m infra.kafka fetch` (install step) and `python -m infra.kafka run` (dev broker)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .broker import KafkaBroker, KafkaSetupError, ensure_jars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.kafka")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the broker jars into the cache")
    f.add_argument("--cache-dir", type=Path)
    r = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    r.add_argument("--port", type=int)
    r.add_argument("--data-dir", type=Path, help="kept across runs (default: temp dir)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.cmd == "fetch":
            print(ensure_jars(a.cache_dir))
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly on SIGTERM too
        with KafkaBroker(data_dir=a.data_dir, port=a.port) as b:
            print(f"KAFKA_BOOTSTRAP={b.bootstrap}", flush=True)
            print(f"log: {b.log_file}  (Ctrl-C to stop)", flush=True)
            while b.running:
                b.proc.wait()
            print(f"broker exited (rc={b.proc.returncode if b.proc else '?'}); last log lines:\n"
                  f"{b.tail_log()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except KafkaSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
