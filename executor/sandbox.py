"""The WebAssembly sandbox: one task, one fresh wasmtime Store, hard limits, precise reasons.

- One Engine per Sandbox with fuel metering and epoch interruption. One ticker thread
  increments the engine's epoch every `tick_s`; every store asks a callback at each tick
  whether to go on (wall-time deadline, cancellation, output cap), so a task is stopped
  within one tick of its deadline or of `cancel`.
- Modules are compiled once: keyed by the SHA-256 of their bytes, precompiled code is kept on
  disk (`Module.serialize`, `<hash>-<engine>.cwasm`) and in memory with its imports already
  resolved (`InstancePre`). Starting a task is then: new Store, limits, WASI context,
  instantiate.
- A task sees one preopened folder (its working folder, as `/`), its argv and nothing else:
  no environment, no inherited stdio, no sockets, no clock beyond WASI's. stdout and stderr go
  to files in the sandbox's log folder, each capped at `Limits.output_bytes`; a module that
  writes more is stopped (`output_limit`).
- The host offers one function beyond WASI: `chimera.progress(i32 pct)`.
- wasmtime's Python binding calls the library through ctypes (`cdll`), which releases the GIL
  while wasm runs, so tasks on a pool of threads run in parallel with each other and with
  the service's Kafka loop (checked in tests/unit/test_sandbox.py).

Failure reasons (`Outcome.reason`): out_of_fuel, out_of_memory, timeout, trap, unknown_import,
module_not_found, bad_payload, output_limit, exit_status (a non-zero exit), cancelled.
"""
from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import wasmtime
from wasmtime import _ffi as ffi

REASONS = ("out_of_fuel", "out_of_memory", "timeout", "trap", "unknown_import", "module_not_found",
           "bad_payload", "output_limit", "exit_status", "cancelled")
_PAGE = 65536


@dataclass(frozen=True)
class Limits:
    fuel: int = 20_000_000_000          # wasm instructions, roughly
    memory_bytes: int = 64 << 20        # linear memory of the task's instance
    timeout_s: float = 30.0             # wall time, from instantiation
    output_bytes: int = 1 << 20         # each of stdout and stderr


@dataclass
class Outcome:
    ok: bool
    reason: str | None                  # one of REASONS when not ok
    detail: str = ""
    exit_code: int | None = None
    stdout: Path | None = None
    stderr: Path | None = None
    fuel_used: int = 0
    wall_s: float = 0.0
    memory_bytes: int = 0               # the instance's linear memory when it ended
    progress: list[int] = field(default_factory=list)
    output_truncated: bool = False

    def last_line(self, limit: int = 500) -> str:
        """The last non-empty line of stdout: task modules print their summary there."""
        if not self.stdout or not self.stdout.exists():
            return ""
        with open(self.stdout, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read().decode("utf-8", "replace")
        lines = [ln for ln in tail.splitlines() if ln.strip()]
        return lines[-1][:limit] if lines else ""


class SandboxError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Loaded:
    """A compiled module with its imports resolved: what a task start needs."""
    digest: str
    module: wasmtime.Module
    pre: wasmtime.InstancePre | None
    link_error: SandboxError | None     # unknown imports: reported per task, not raised at load


class _Run:
    """What the epoch callback, the output sinks and the progress function know of one task."""
    __slots__ = ("deadline", "stop_reason", "cancel", "progress", "on_progress", "out", "err")

    def __init__(self, deadline: float, cancel: threading.Event | None, on_progress) -> None:
        self.deadline = deadline
        self.stop_reason: str | None = None
        self.cancel = cancel
        self.progress: list[int] = []
        self.on_progress = on_progress
        self.out = self.err = None


class _Capped:
    """A WASI output stream into a file, at most `cap` bytes; past it the task is stopped."""

    def __init__(self, path: Path, cap: int, run: _Run) -> None:
        self.f = open(path, "wb")
        self.cap = cap
        self.written = 0
        self.truncated = False
        self.run = run

    def __call__(self, data: bytes) -> int:
        room = self.cap - self.written
        if len(data) > room:
            self.truncated = True
            if self.run.stop_reason is None:
                self.run.stop_reason = "output_limit"
            data = data[:max(room, 0)]
        if data:
            self.f.write(data)
            self.written += len(data)
        return None  # "all written": the module is stopped at the next tick, not fed errors

    def close(self) -> None:
        self.f.close()


# One epoch callback for every store (a ctypes callback per store would cost more than the
# instantiation); `data` is the run's id in _RUNS.
_RUNS: dict[int, _Run] = {}
_run_ids = itertools.count(1)
_EpochCB = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.POINTER(ffi.wasmtime_context_t), ctypes.c_void_p,
                            ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t))
_Finalize = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _on_epoch(_ctx, data, delta, kind):
    run = _RUNS.get(data or 0)
    if run is not None and run.stop_reason is None:
        if run.cancel is not None and run.cancel.is_set():
            run.stop_reason = "cancelled"
        elif time.monotonic() >= run.deadline:
            run.stop_reason = "timeout"
    if run is None or run.stop_reason is not None:
        why = (run.stop_reason if run else "gone").encode()
        err = ffi.wasmtime_error_new(b"chimera-stop:" + why)
        return ctypes.cast(err, ctypes.c_void_p).value
    delta[0] = 1
    kind[0] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
    return 0


_EPOCH_CB = _EpochCB(_on_epoch)
_NO_FINALIZE = _Finalize(lambda _data: None)
_current = threading.local()


class Sandbox:
    """Runs task modules. Thread-safe: call `run` from as many threads as there are slots."""

    def __init__(self, work_root: Path | str, *, cache_dir: Path | str | None = None,
                 tick_s: float = 0.01, max_wasm_stack: int = 512 * 1024) -> None:
        self.work_root = Path(work_root)
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        cfg.max_wasm_stack = max_wasm_stack
        cfg.cranelift_opt_level = "speed"
        # Traps by explicit checks, not SIGILL/SIGSEGV handlers: a library in the same process that
        # installs its own handlers (chdb's ClickHouse engine does) would otherwise take a wasm
        # trap for a crash and kill or hang the process.
        cfg.signals_based_traps = False
        self.engine = wasmtime.Engine(cfg)
        self._engine_tag = hashlib.sha256(
            f"wasmtime-{_wasmtime_version()}:fuel:epoch:stack={max_wasm_stack}:nosignals".encode()).hexdigest()[:12]
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self.linker.define_func("chimera", "progress", wasmtime.FuncType([wasmtime.ValType.i32()], []),
                                _progress)
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()
        self.compiled = 0           # modules compiled from wasm (not loaded from the disk cache)

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=1)

    # -- modules -------------------------------------------------------------------------
    def load(self, wasm: bytes | Path | str) -> Loaded:
        """A module, compiled once per content (memory, then the on-disk cache, then compile)."""
        if isinstance(wasm, (bytearray, memoryview)):
            wasm = bytes(wasm)
        if not isinstance(wasm, bytes):
            path = Path(wasm)
            if not path.is_file():
                raise SandboxError("module_not_found", f"no module file {path}")
            wasm = path.read_bytes()
        digest = hashlib.sha256(wasm).hexdigest()
        got = self._loaded.get(digest)
        if got is not None:
            return got
        with self._lock:
            got = self._loaded.get(digest)
            if got is None:
                got = self._loaded[digest] = self._compile(digest, wasm)
        return got

    def _compile(self, digest: str, wasm: bytes) -> Loaded:
        module = None
        cached = self.cache_dir / f"{digest}-{self._engine_tag}.cwasm" if self.cache_dir else None
        if cached is not None and cached.exists():
            try:
                module = wasmtime.Module.deserialize_file(self.engine, str(cached))
            except wasmtime.WasmtimeError:
                module = None  # stale or damaged: compile again
        if module is None:
            try:
                module = wasmtime.Module(self.engine, wasm)
            except wasmtime.WasmtimeError as exc:
                raise SandboxError("bad_payload", f"not a valid WebAssembly module: {_first_line(exc)}") from exc
            self.compiled += 1
            if cached is not None:
                tmp = cached.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
                tmp.write_bytes(module.serialize())
                os.replace(tmp, cached)
        try:
            return Loaded(digest, module, self.linker.instantiate_pre(module), None)
        except wasmtime.WasmtimeError as exc:
            return Loaded(digest, module, None, SandboxError("unknown_import", _first_line(exc)))

    # -- tasks ---------------------------------------------------------------------------
    def workdir(self, name: str) -> Path:
        """A fresh working folder for one task (its only view of the file system)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "task"
        path = self.work_root / safe
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, module: Loaded | bytes | bytearray | Path | str, args: list[str], workdir: Path, *,
            limits: Limits = Limits(), log_dir: Path | None = None, program: str = "task",
            on_progress: Callable[[int], None] | None = None,
            cancel: threading.Event | None = None) -> Outcome:
        """Run a WASI command module's `_start` in a fresh store; never raises for the task's
        own failures (they are the Outcome's reason)."""
        log_dir = Path(log_dir or workdir.parent / (workdir.name + ".logs"))
        log_dir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = log_dir / "stdout", log_dir / "stderr"
        started = time.monotonic()

        def failed(reason: str, detail: str) -> Outcome:
            return Outcome(False, reason, detail, stdout=out_path if out_path.exists() else None,
                           stderr=err_path if err_path.exists() else None,
                           wall_s=time.monotonic() - started)

        try:
            loaded = module if isinstance(module, Loaded) else self.load(module)
        except SandboxError as exc:
            return failed(exc.reason, exc.detail)
        if loaded.link_error is not None:
            return failed(loaded.link_error.reason, loaded.link_error.detail)
        if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) and "\0" not in a for a in args):
            return failed("bad_payload", "arguments must be a list of strings without NUL")
        if not workdir.is_dir():
            return failed("bad_payload", f"working folder {workdir} does not exist")

        run = _Run(started + limits.timeout_s, cancel, on_progress)
        run.out = _Capped(out_path, limits.output_bytes, run)
        run.err = _Capped(err_path, limits.output_bytes, run)
        run_id = next(_run_ids)
        _RUNS[run_id] = run
        store = wasmtime.Store(self.engine)
        outcome: Outcome
        try:
            store.set_fuel(limits.fuel)
            store.set_limits(memory_size=limits.memory_bytes, instances=4, tables=4, memories=1)
            ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), _EPOCH_CB, ctypes.c_void_p(run_id),
                                                       _NO_FINALIZE)
            store.set_epoch_deadline(1)
            wasi = wasmtime.WasiConfig()
            wasi.argv = [program, *args]
            wasi.preopen_dir(str(workdir), "/")
            wasi.stdout_custom = run.out
            wasi.stderr_custom = run.err
            store.set_wasi(wasi)
            _current.run = run
            exit_code: int | None = None
            error: BaseException | None = None
            instance = None
            try:
                instance = loaded.pre.instantiate(store)
                start = instance.exports(store).get("_start")
                if not isinstance(start, wasmtime.Func):
                    raise SandboxError("bad_payload", "the module exports no _start function (not a WASI command)")
                start(store)
                exit_code = 0
            except wasmtime.ExitTrap as exc:
                exit_code = exc.code
            except (wasmtime.Trap, wasmtime.WasmtimeError, SandboxError) as exc:
                error = exc
            finally:
                _current.run = None
            memory = _memory_bytes(instance, store)
            fuel_used = limits.fuel - _fuel_left(store)
            outcome = self._judge(run, exit_code, error, memory, limits)
            outcome.fuel_used = fuel_used
            outcome.memory_bytes = memory
        finally:
            _RUNS.pop(run_id, None)
            run.out.close()
            run.err.close()
            store.close()
        outcome.stdout, outcome.stderr = out_path, err_path
        outcome.progress = run.progress
        outcome.output_truncated = run.out.truncated or run.err.truncated
        outcome.wall_s = time.monotonic() - started
        return outcome

    @staticmethod
    def _judge(run: _Run, exit_code: int | None, error: BaseException | None, memory: int,
               limits: Limits) -> Outcome:
        if run.stop_reason is not None:      # our own stop wins: the trap it caused is its effect
            detail = {"timeout": f"wall time over {limits.timeout_s:g} s",
                      "output_limit": f"more than {limits.output_bytes} bytes of output",
                      "cancelled": "cancelled"}.get(run.stop_reason, run.stop_reason)
            return Outcome(False, run.stop_reason, detail, exit_code=exit_code)
        near_limit = memory + max(limits.memory_bytes // 8, 2 << 20) > limits.memory_bytes
        if error is None:
            if exit_code == 0:
                return Outcome(True, None, "", exit_code=0)
            if near_limit:
                return Outcome(False, "out_of_memory", f"exit status {exit_code} with linear memory at "
                               f"{memory >> 20} of {limits.memory_bytes >> 20} MiB", exit_code=exit_code)
            return Outcome(False, "exit_status", f"exit status {exit_code}", exit_code=exit_code)
        if isinstance(error, SandboxError):
            return Outcome(False, error.reason, error.detail)
        code = getattr(error, "trap_code", None)
        text = _first_line(error)
        if code == wasmtime.TrapCode.OUT_OF_FUEL or "all fuel consumed" in str(error):
            return Outcome(False, "out_of_fuel", f"fuel limit {limits.fuel} reached")
        if "exceeds memory limits" in str(error) or "memory minimum size" in str(error):
            return Outcome(False, "out_of_memory", text)
        if code == wasmtime.TrapCode.STACK_OVERFLOW or "call stack exhausted" in str(error):
            return Outcome(False, "trap", "stack overflow (call stack exhausted)")
        if near_limit:
            return Outcome(False, "out_of_memory", f"trapped ({_trap_text(error)}) with linear memory at "
                           f"{memory >> 20} of {limits.memory_bytes >> 20} MiB")
        return Outcome(False, "trap", _trap_text(error))


def _progress(pct: int) -> None:
    """`chimera.progress(pct)`, called by a module on the thread that runs it."""
    run = getattr(_current, "run", None)
    if run is None:
        return
    pct = max(0, min(100, int(pct)))
    if run.progress and pct <= run.progress[-1]:
        return  # progress only moves forward; repeats are dropped here, not published
    run.progress.append(pct)
    if run.on_progress is not None:
        try:
            run.on_progress(pct)
        except Exception:  # a failing listener must not become the module's trap
            pass


def _memory_bytes(instance, store) -> int:
    if instance is None:
        return 0
    try:
        mem = instance.exports(store).get("memory")
        return mem.size(store) * _PAGE if isinstance(mem, wasmtime.Memory) else 0
    except Exception:
        return 0


def _fuel_left(store) -> int:
    try:
        return store.get_fuel()
    except Exception:
        return 0


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _trap_text(exc: BaseException) -> str:
    """The trap's own message (wasmtime puts the backtrace first and the cause last)."""
    text = str(exc).strip()
    if "Caused by:" in text:
        return text.split("Caused by:")[-1].strip().splitlines()[0][:300]
    code = getattr(exc, "trap_code", None)
    return (f"{code.name.lower()}: " if code is not None else "") + _first_line(exc)


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version
        return version("wasmtime")
    except Exception:
        return "unknown"


class SlotPool:
    """A bounded pool of task slots (threads: wasmtime releases the GIL while wasm runs).
    `submit` never queues: it returns None when every slot is busy, so the caller applies
    backpressure (pauses its consumer) instead of buffering without limit."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("at least one slot")
        self.slots = slots
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="slot")
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def free(self) -> int:
        return self.slots - self._busy

    def submit(self, fn: Callable, *args, **kwargs) -> Future | None:
        with self._lock:
            if self._busy >= self.slots:
                return None
            self._busy += 1
        try:
            fut = self._pool.submit(fn, *args, **kwargs)
        except BaseException:
            with self._lock:
                self._busy -= 1
            raise
        fut.add_done_callback(self._release)
        return fut

    def _release(self, _fut) -> None:
        with self._lock:
            self._busy -= 1

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
