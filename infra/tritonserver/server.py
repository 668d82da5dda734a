"""A real Triton Inference Server (CPU, Python backend), started by the project.

Why: the planner's learned models are served by Triton, and tests must talk to a genuine
server, on machines without Docker or a GPU. The binary is the one bundled in the
`nvidia-pytriton` wheel (only its Python backend is bundled). Facts this launcher encodes
(see ../shared/ARCHITECTURE.md):

- the backend stub for this Python is copied next to `libtriton_python.so` in a backends
  folder under the cache (the wheel's folder is left untouched);
- `LD_LIBRARY_PATH` holds the wheel's `nvidia_pytriton.libs` and this Python's LIBDIR
  (without it the stub picks up the system libpython and crashes);
- the stub runs the `python3` first on PATH and ignores PYTHONPATH, and with numpy >= 2 it
  answers with EMPTY outputs. So the server gets its own tiny venv (first on PATH) holding
  only numpy 1.26.4, which then adds this venv's site-packages after its own (a `.pth`):
  torch, transformers and peft come from the main venv, numpy 1.26 shadows numpy 2 in the
  server only. The main venv keeps numpy 2 (ortools and pandas need it).

`TRITON_URL` (host:grpc_port) selects an external server instead (`triton_url_or_start`).
`stop()` stops only the process this object started.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterable

from infra.process import MARKER, LocalService, cache_root, free_ports

NUMPY_FOR_SERVER = "numpy==1.26.4"
HERE = Path(__file__).resolve().parent


class TritonSetupError(RuntimeError):
    """The wheel is missing, the server environment cannot be built, or Triton would not come up."""


def pytriton_dir() -> Path:
    """The wheel's `tritonserver` folder (bin/, backends/, python_backend_stubs/)."""
    import importlib.util
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonSetupError("nvidia-pytriton is not installed (make install puts it in the [triton] extra)")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        raise TritonSetupError(f"no tritonserver binary under {root}")
    return root


def default_cache_dir() -> Path:
    return cache_root() / "tritonserver"


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def ensure_env(cache_dir: Path | None = None) -> Path:
    """Build (once; a marker and a lock make it idempotent and safe in parallel) the backends
    folder with the stub, and the server's numpy-1 venv layered over this venv. Returns the cache dir."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    stamp = cache / MARKER
    want = f"{sys.prefix}\n{NUMPY_FOR_SERVER}\n"
    if stamp.exists() and stamp.read_text() == want:
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == want:
            return cache
        ts = pytriton_dir()
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        backend = cache / "backends" / "python"
        backend.mkdir(parents=True, exist_ok=True)
        for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(ts / "backends" / "python" / f, backend / f)
        stub = ts / "python_backend_stubs" / ver / "triton_python_backend_stub"
        if not stub.exists():
            raise TritonSetupError(f"the wheel has no Python-backend stub for Python {ver}")
        shutil.copy2(stub, backend / "triton_python_backend_stub")
        venv = cache / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = venv / "lib" / f"python{ver}" / "site-packages"
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                              NUMPY_FOR_SERVER], capture_output=True, text=True)
        if res.returncode != 0:
            raise TritonSetupError(f"installing {NUMPY_FOR_SERVER} for the server failed:\n{res.stderr[-2000:]}")
        (site / "zz-chimera-main-venv.pth").write_text(f"import site; site.addsitedir({_site_packages()!r})\n")
        check = subprocess.run([str(venv / "bin" / "python"), "-c", "import numpy; print(numpy.__version__)"],
                               capture_output=True, text=True)
        if not check.stdout.startswith("1."):
            raise TritonSetupError(f"the server venv does not see numpy 1: {check.stdout}{check.stderr}")
        stamp.write_text(want)
    return cache


class TritonServer(LocalService):
    """tritonserver on 127.0.0.1 (gRPC, HTTP and metrics on free ports), explicit model control,
    as a context manager. `models` are loaded at start; others can be loaded later by clients."""

    name, error, env_var = "tritonserver", TritonSetupError, "TRITON_URL"
    log_name, tmp_prefix, probe = "tritonserver.log", "chimera-triton-", "report the server and its models ready"
    poll_s, tail_lines, stop_timeout = 0.2, 40, 20.0

    def __init__(self, repository: Path | str, models: Iterable[str] = (), start_timeout: float = 180.0,
                 log_dir: Path | str | None = None, cache_dir: Path | None = None) -> None:
        super().__init__(log_dir, start_timeout)
        self.repository = Path(repository).resolve()
        self.models = list(models)
        self.cache_dir = cache_dir
        self.grpc_port = self.http_port = self.metrics_port = 0
        self._client = None

    @property
    def log_dir(self) -> Path | None:
        """The server's folder holds only its log."""
        return self.data_dir

    @property
    def url(self) -> str:
        """host:port of the gRPC endpoint (what TRITON_URL holds)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def address(self) -> str:
        return self.url

    def command(self) -> tuple[list[str], dict[str, str]]:
        cache = ensure_env(self.cache_dir)
        ts = pytriton_dir()
        cmd = [str(ts / "bin" / "tritonserver"), f"--model-repository={self.repository}",
               f"--backend-directory={cache / 'backends'}", "--model-control-mode=explicit",
               "--allow-gpu-metrics=false", "--strict-readiness=true", "--exit-on-error=false",
               f"--grpc-port={self.grpc_port}", f"--http-port={self.http_port}",
               f"--metrics-port={self.metrics_port}", "--http-address=127.0.0.1",
               "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", "--log-verbose=0"]
        cmd += [f"--load-model={m}" for m in self.models]
        env = dict(os.environ)
        env["PATH"] = f"{cache / 'venv' / 'bin'}:{env.get('PATH', '')}"
        libs = [str(Path(_site_packages()) / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2))))
        env.pop("PYTHONPATH", None)
        return cmd, env

    def _command(self) -> tuple[list[str], dict[str, str]]:
        self.grpc_port, self.http_port, self.metrics_port = free_ports(3)   # new ones on each start
        return self.command()

    def _wait_ready(self, deadline: float) -> None:
        """One gRPC client for all the probes."""
        import tritonclient.grpc as grpcclient
        self._client = grpcclient.InferenceServerClient(self.url)
        try:
            super()._wait_ready(deadline)
        finally:
            self._client.close()
            self._client = None

    def ready(self) -> bool:
        return self._client.is_server_ready() and all(self._client.is_model_ready(m) for m in self.models)


def triton_url_or_start(repository: Path | str, models: Iterable[str] = (),
                        **kwargs) -> contextlib.AbstractContextManager[str]:
    """`$TRITON_URL` if set (nothing started), else a local tritonserver for the block."""
    return TritonServer.address_or_start(repository, models, **kwargs)
