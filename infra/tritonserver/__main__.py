"""`python -m infra.tritonserver setup` (install step) and `... run` (a dev server on a repository)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .server import TritonServer, TritonSetupError, ensure_env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.tritonserver")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="build the backends folder and the server's numpy-1 venv")
    r = sub.add_parser("run", help="serve the model repository in the foreground until Ctrl-C")
    r.add_argument("--repository", type=Path, default=Path(".data/triton_repo"))
    r.add_argument("--model", action="append", default=None, help="load at start (default: embedder, estimator)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.cmd == "setup":
            print(ensure_env())
            return 0
        from triton_models import repository
        repository.prepare(a.repository)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with TritonServer(a.repository, a.model or repository.MODELS, log_dir=a.repository / ".log") as s:
            print(f"TRITON_URL={s.url}", flush=True)
            print(f"log: {s.log_file}  (Ctrl-C to stop)", flush=True)
            s.proc.wait()
            print(f"tritonserver exited (rc={s.proc.returncode if s.proc else '?'}):\n{s.tail_log()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except TritonSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
