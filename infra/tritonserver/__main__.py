"""`python -m infra.tritonserver setup` (install step) and `... run` (a dev server on a repository)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.process import command_line

from .server import TritonServer, TritonSetupError, ensure_env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.tritonserver")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="build the backends folder and the server's numpy-1 venv")
    r = sub.add_parser("run", help="serve the model repository in the foreground until Ctrl-C")
    r.add_argument("--repository", type=Path, default=Path(".data/triton_repo"))
    r.add_argument("--model", action="append", default=None, help="load at start (default: embedder, estimator)")

    def server(a: argparse.Namespace) -> TritonServer:
        from triton_models import repository
        repository.prepare(a.repository)
        return TritonServer(a.repository, a.model or repository.MODELS, log_dir=a.repository / ".log")
    return command_line(p, argv, TritonSetupError, lambda a: ensure_env(), server)


if __name__ == "__main__":
    sys.exit(main())
