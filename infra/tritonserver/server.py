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

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

NUMPY_FOR_SERVER = "numpy==1.26.4"
HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
MARKER = ".complete"


class TritonSetupError(RuntimeError):
    """The wheel is missing, the server environment cannot be built, or Triton would not come up."""


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
    checkout = (REPO_ROOT / "pyproject.toml").exists()
    root = Path(os.environ.get("CHIMERA_CACHE")
                or (REPO_ROOT / ".cache" if checkout else Path.home() / ".cache" / "chimera"))
    return root / "tritonserver"


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


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TritonServer:
    """tritonserver on 127.0.0.1 (gRPC, HTTP and metrics on free ports), explicit model control,
    as a context manager. `models` are loaded at start; others can be loaded later by clients."""

    def __init__(self, repository: Path | str, models: Iterable[str] = (), start_timeout: float = 180.0,
                 log_dir: Path | str | None = None, cache_dir: Path | None = None) -> None:
        self.repository = Path(repository).resolve()
        self.models = list(models)
        self.start_timeout = start_timeout
        self.cache_dir = cache_dir
        self.log_dir = Path(log_dir) if log_dir else None
        self.proc: subprocess.Popen | None = None
        self.grpc_port = self.http_port = self.metrics_port = 0
        self.start_seconds: float | None = None
        self._tmp: str | None = None
        self._logf = None

    @property
    def url(self) -> str:
        """host:port of the gRPC endpoint (what TRITON_URL holds)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_file(self) -> Path:
        assert self.log_dir is not None
        return self.log_dir / "tritonserver.log"

    def tail_log(self, n: int = 40) -> str:
        with contextlib.suppress(OSError, AssertionError), open(self.log_file, errors="replace") as f:
            return "".join(deque(f, n))
        return "(no log)"

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

    def start(self) -> "TritonServer":
        if self.proc is not None:
            return self
        t0 = time.monotonic()
        if self.log_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="chimera-triton-")
            self.log_dir = Path(self._tmp)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.grpc_port, self.http_port, self.metrics_port = _free_ports(3)
        cmd, env = self.command()
        self._logf = open(self.log_file, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread()
                                     else None)
        _live.add(self)
        try:
            self._wait_ready(t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("tritonserver up at %s in %.1fs (pid %d, repo %s)", self.url, self.start_seconds,
                 self.proc.pid, self.repository)
        return self

    def _wait_ready(self, deadline: float) -> None:
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(self.url)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise TritonSetupError(f"tritonserver exited early (rc={self.proc.returncode}); log:\n"
                                           f"{self.tail_log()}")
                with contextlib.suppress(Exception):
                    if client.is_server_ready() and all(client.is_model_ready(m) for m in self.models):
                        return
                time.sleep(0.2)
        finally:
            client.close()
        raise TritonSetupError(f"tritonserver not ready within {self.start_timeout:.0f}s; log:\n{self.tail_log()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM our own server (it unloads models and exits), SIGKILL after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _live.discard(self)
        if self._logf:
            self._logf.close()
            self._logf = None

    def kill(self) -> None:
        """SIGKILL our own server: a crash, as a test of the clients' fallback."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.stop()

    def close(self) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self.log_dir = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


_live: set[TritonServer] = set()


@atexit.register
def _stop_all() -> None:
    for s in list(_live):
        s.stop(timeout=10)


@contextlib.contextmanager
def triton_url_or_start(repository: Path | str, models: Iterable[str] = (), **kwargs) -> Iterator[str]:
    """`$TRITON_URL` if set (nothing started), else a local tritonserver for the block."""
    if os.environ.get("TRITON_URL"):
        yield os.environ["TRITON_URL"]
        return
    with TritonServer(repository, models, **kwargs) as server:
        yield server.url
