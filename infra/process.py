"""The lifecycle every local service launcher shares (Kafka, Neo4j, tritonserver).

Why: tests, the demo and `chimera up` start real services as child processes, and each must
be started, waited for, stopped and cleaned up the same careful way: free loopback ports, a
log file to quote when it fails, a deadline that notices an early exit, SIGTERM before
SIGKILL, no orphans (PDEATHSIG, atexit), and an external service used instead when its env
var is set. `LocalService` does that once; a launcher says only what differs: its command,
its config files, its readiness probe and its address.
"""
from __future__ import annotations

import argparse
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
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = ".complete"


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (sockets held together so they differ)."""
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


def port_open(port: int) -> bool:
    """Something accepts on 127.0.0.1:port (a cheap gate before a protocol-level probe)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def die_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies (covers a SIGKILLed test run)."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (a clean shutdown), SIGKILL after `timeout`; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cache_root() -> Path:
    """`$CHIMERA_CACHE`, else `<repo>/.cache` in a checkout (git-ignored), else
    `~/.cache/chimera` (running from an installed package)."""
    checkout = (REPO_ROOT / "pyproject.toml").exists()
    return Path(os.environ.get("CHIMERA_CACHE")
                or (REPO_ROOT / ".cache" if checkout else Path.home() / ".cache" / "chimera"))


def maven_jars(pom: Path, libs: Path, name: str, version: str, jar: str, error: type[Exception]) -> Path:
    """`mvn dependency:copy-dependencies` of `pom` into `libs`, once: a marker written atomically
    after a copy that holds `jar` short-circuits later calls; a file lock keeps parallel test
    processes from fetching at the same time. Failures raise `error` naming the command."""
    if (libs / MARKER).exists():
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / f".{libs.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / MARKER).exists():  # another process finished while we waited
            return libs
        mvn = shutil.which("mvn")
        cmd = [mvn or "mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}"]
        if not mvn:
            raise error(f"Maven (`mvn`) is not on PATH; needed to run: {' '.join(cmd)}")
        logging.getLogger(__name__).info("fetching %s %s jars into %s", name, version, libs)
        res = subprocess.run(cmd, capture_output=True, text=True)
        jars = sorted(p.name for p in libs.glob("*.jar"))
        if res.returncode != 0 or jar not in jars:
            raise error(f"fetching {name} jars failed (rc={res.returncode}): {' '.join(cmd)}\n"
                        f"{(res.stdout + res.stderr)[-3000:]}")
        tmp = libs / f"{MARKER}.tmp"
        tmp.write_text("\n".join([version, *jars]) + "\n")
        os.replace(tmp, libs / MARKER)
    return libs


def poll_ready(ready: Callable[[], bool], deadline: float, poll_s: float,
               check: Callable[[], None] = lambda: None) -> tuple[bool, BaseException | None]:
    """Probe `ready` every `poll_s` until it says yes (True, None) or `deadline` (monotonic)
    passes (False, the last error it raised); `check` runs before each probe and may raise
    (a process that exited). A probe that raises counts as not yet."""
    last: BaseException | None = None
    while time.monotonic() < deadline:
        check()
        try:
            if ready():
                return True, None
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(poll_s)
    return False, last


class LocalService:
    """One service in a child process, as a context manager: `start()` waits until `ready()`,
    `stop()` ends only our own process, `close()` also removes a temp folder.

    data_dir=None: a temp folder (removed by close(); by __exit__); a given one is kept. The log
    (`log_name` in it) is appended to, and its tail is quoted when the service does not come up.
    A subclass gives `_command()` (write its config, pick its ports: called on each start),
    `ready()` and `address`; `_prepare()` fetches what it needs before a folder is made.
    """

    name = "service"                  # in messages
    version = ""                      # in the start-up log line
    error: type[Exception] = RuntimeError
    env_var = ""                      # holds an external service's address (nothing is started)
    log_name = "service.log"
    tmp_prefix = "chimera-"
    probe = "get ready"               # "<name> did not <probe> at <address> within ..."
    poll_s = 0.1
    tail_lines = 30
    stop_timeout = 15.0
    exit_stop_timeout = 10.0          # at interpreter exit: nobody waits long for a shutdown

    def __init__(self, data_dir: Path | str | None = None, start_timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir) if data_dir else None
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        self._tmp: str | None = None
        self._logf = None
        self._log_start = 0

    # ------------------------------------------------------------ what a launcher gives
    @property
    def address(self) -> str:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Before the folder is made (fetch jars, build an environment)."""

    def _command(self) -> tuple[list[str], dict[str, str] | None]:
        """The command line and environment (None: ours), after writing config files."""
        raise NotImplementedError

    def ready(self) -> bool:
        """One readiness probe; an exception counts as not yet (the last one is reported)."""
        raise NotImplementedError

    # ------------------------------------------------------------ the shared lifecycle
    @property
    def log_file(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / self.log_name

    def tail_log(self, n: int | None = None) -> str:
        with contextlib.suppress(OSError, AssertionError), open(self.log_file, errors="replace") as f:
            return "".join(deque(f, n or self.tail_lines))
        return "(no log)"

    def start(self):
        """Launch the process (in its own session: Ctrl-C goes to us, stop() decides when it ends)
        and wait until `ready()`; on any failure stop it again and raise."""
        if self.proc is not None:
            return self
        t0 = time.monotonic()
        self._prepare()
        if self.data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix=self.tmp_prefix)
            self.data_dir = Path(self._tmp)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            cmd, env = self._command()
            self._logf = open(self.log_file, "ab")
            self._log_start = self.log_file.stat().st_size
            # PDEATHSIG fires when the parent *thread* ends: only from the main thread
            main = threading.current_thread() is threading.main_thread()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, preexec_fn=die_with_parent if main else None)
            _live.add(self)
            self._wait_ready(t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        logging.getLogger(type(self).__module__).info(
            "%s up at %s in %.1fs (pid %d, folder %s)", f"{self.name} {self.version}".strip(), self.address,
            self.start_seconds, self.proc.pid, self.data_dir)
        return self

    def _wait_ready(self, deadline: float) -> None:
        def exited() -> None:
            if self.proc.poll() is not None:
                raise self.error(f"{self.name} exited early (rc={self.proc.returncode}); "
                                 f"last log lines:\n{self.tail_log()}")
        ok, last = poll_ready(self.ready, deadline, self.poll_s, exited)
        if ok:
            return
        raise self.error(f"{self.name} did not {self.probe} at {self.address} within {self.start_timeout:.0f}s"
                         + (f" (last error: {last!r})" if last else "") + f"; last log lines:\n{self.tail_log()}")

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM our own process (a clean shutdown), SIGKILL after `timeout` (`stop_timeout`)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, self.stop_timeout if timeout is None else timeout)
        _live.discard(self)
        if self._logf:
            self._logf.close()
            self._logf = None

    def kill(self) -> None:
        """SIGKILL our own process: a crash (a kept folder stays; start() again recovers it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.stop()

    def close(self) -> None:
        """stop(), then remove a temp folder."""
        self.stop()
        self._drop_tmp()

    def _drop_tmp(self) -> bool:
        if not self._tmp:
            return False
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = self.data_dir = None
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ external or started
    @classmethod
    def external_or_start(cls, *args, **kwargs) -> tuple[str, "LocalService | None"]:
        """`($<env_var>, None)` when set (nothing started), else `(address, started service)`:
        the caller stops it (atexit does otherwise)."""
        if os.environ.get(cls.env_var):
            return os.environ[cls.env_var], None
        service = cls(*args, **kwargs).start()
        return service.address, service

    @classmethod
    @contextlib.contextmanager
    def address_or_start(cls, *args, **kwargs) -> Iterator[str]:
        """`$<env_var>` when set (nothing started), else a service that lives for the block."""
        if os.environ.get(cls.env_var):
            yield os.environ[cls.env_var]
            return
        with cls(*args, **kwargs) as service:
            yield service.address


_live: set[LocalService] = set()


@atexit.register
def _stop_all() -> None:
    for s in list(_live):
        s.stop(timeout=s.exit_stop_timeout)


def command_line(parser: argparse.ArgumentParser, argv: list[str] | None, error: type[Exception],
                 setup: Callable[[argparse.Namespace], object],
                 service: Callable[[argparse.Namespace], LocalService]) -> int:
    """The body of `python -m infra.<launcher>`: the command "run" serves `service(args)` in the
    foreground, printing `<env_var>=<address>`, until Ctrl-C or SIGTERM (0) or until it exits on
    its own (1, with its log's tail); the other (the install step) prints `setup(args)`; `error`: 2."""
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.cmd != "run":
            print(setup(a))
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly on SIGTERM too
        with service(a) as s:
            print(f"{s.env_var}={s.address}", flush=True)
            print(f"log: {s.log_file}  (Ctrl-C to stop)", flush=True)
            while s.running:
                s.proc.wait()
            print(f"{s.name} exited (rc={s.proc.returncode if s.proc else '?'}); last log lines:\n{s.tail_log()}",
                  file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
