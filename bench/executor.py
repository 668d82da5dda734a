"""Executor benchmarks, every figure against a baseline measured in the same run.

1. Task start: p50/p99 of a whole task on the trivial module through Sandbox.run (fresh store,
   fuel, memory limit, epoch callback, WASI context with one preopen and capped output files,
   instantiate, _start, teardown) against a bare wasmtime instantiate (new Store +
   InstancePre.instantiate + _start) of the same module. Goal: p99 <= 1 ms.
2. 100 concurrent sandboxes, each touching 16 MiB: resident memory per sandbox (process RSS
   delta / 100). Goal: each under 64 MB.
3. Memory flat after 10,000 tasks: RSS after 1,000 and after 10,000 tasks through the pool.
4. Throughput: trivial tasks/min through the executor's slot pool (2 slots, per-task working
   folder made and removed) against a bare loop of instantiate + _start.

    python -m bench.executor [--tasks 10000]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import wasmtime

from executor.sandbox import Limits, Sandbox, SlotPool
from executor.tasks import REGISTRY


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bare_start(wasm: bytes, n: int) -> list[float]:
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    pre = linker.instantiate_pre(wasmtime.Module(engine, wasm))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        store = wasmtime.Store(engine)
        inst = pre.instantiate(store)
        inst.exports(store)["_start"](store)
        times.append(time.perf_counter() - t)
    return times


def sandbox_start(sb: Sandbox, wasm: bytes, n: int) -> list[float]:
    loaded = sb.load(wasm)
    wd = sb.workdir("start")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = sb.run(loaded, [], wd)
        times.append(time.perf_counter() - t)
        assert out.ok, out.reason
    return times


HOLD = """(module (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (drop (memory.grow (i32.const 256)))            ;; +16 MiB
    (local.set $i (i32.const 0))
    (loop $touch (i32.store8 (local.get $i) (i32.const 1))
      (local.set $i (i32.add (local.get $i) (i32.const 4096)))
      (br_if $touch (i32.lt_u (local.get $i) (i32.const 16842752))))
    (loop $spin (br $spin))))"""


def concurrent(sb: Sandbox, n: int) -> tuple[float, float, list]:
    wasm = wasmtime.wat2wasm(HOLD)
    sb.load(wasm)
    base = rss_mb()
    cancel = threading.Event()
    pool = SlotPool(n)
    futs = [pool.submit(sb.run, wasm, [], sb.workdir(f"hold-{i}"),
                        limits=Limits(fuel=10**15, timeout_s=120), cancel=cancel) for i in range(n)]
    time.sleep(3.0)
    peak = rss_mb()
    cancel.set()
    outs = [f.result() for f in futs]
    pool.shutdown()
    return base, peak, outs


def through_pool(sb: Sandbox, wasm: bytes, n: int, slots: int, marks: dict[int, float]) -> float:
    loaded = sb.load(wasm)
    pool = SlotPool(slots)
    done = threading.Semaphore(0)
    finished = [0]
    lock = threading.Lock()

    def task(i: int) -> None:
        wd = sb.workdir(f"t{i}")
        try:
            out = sb.run(loaded, [], wd)
            assert out.ok, out.reason
        finally:
            shutil.rmtree(wd, ignore_errors=True)
            shutil.rmtree(wd.parent / (wd.name + ".logs"), ignore_errors=True)
            with lock:
                finished[0] += 1
                if finished[0] in marks:
                    marks[finished[0]] = rss_mb()
            done.release()

    t = time.perf_counter()
    submitted = 0
    while submitted < n:
        if pool.submit(task, submitted) is None:
            done.acquire()
            done.release()
            time.sleep(0)
            continue
        submitted += 1
    pool.shutdown(wait=True)
    return n / (time.perf_counter() - t) * 60


def bare_loop(wasm: bytes, n: int) -> float:
    t = time.perf_counter()
    bare_start(wasm, n)
    return n / (time.perf_counter() - t) * 60


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--starts", type=int, default=3_000)
    ap.add_argument("--concurrent", type=int, default=100)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    sb = Sandbox(root / "work", cache_dir=root / "cwasm")
    wasm = REGISTRY["noop"].wasm().read_bytes()
    try:
        bare_start(wasm, 300), sandbox_start(sb, wasm, 300)               # warm up
        bare, ours = [], []
        for _ in range(3):                                                # interleaved
            bare += bare_start(wasm, a.starts // 3)
            ours += sandbox_start(sb, wasm, a.starts // 3)
        b99, o99 = pct(bare, 99) * 1e3, pct(ours, 99) * 1e3
        print(f"task start (whole trivial task in a fresh sandbox): p50 {statistics.median(ours) * 1e3:.3f} ms, "
              f"p99 {o99:.3f} ms (goal <= 1 ms: {'met' if o99 <= 1 else 'NOT met'}); bare wasmtime "
              f"instantiate+_start p50 {statistics.median(bare) * 1e3:.3f} ms, p99 {b99:.3f} ms; ratio p99 {o99 / b99:.1f}x")

        base, peak, outs = concurrent(sb, a.concurrent)
        reasons = {o.reason for o in outs}
        per = (peak - base) / a.concurrent
        print(f"{a.concurrent} concurrent sandboxes touching 16 MiB each: RSS {base:.0f} -> {peak:.0f} MB, "
              f"{per:.1f} MB resident per sandbox (goal < 64 MB: {'met' if per < 64 else 'NOT met'}); "
              f"linear memory each {outs[0].memory_bytes >> 20} MiB; all stopped by cancel: {reasons == {'cancelled'}}")

        marks = {1_000: 0.0, a.tasks: 0.0}
        pool_rate = through_pool(sb, wasm, a.tasks, 2, marks)
        bare_rate = bare_loop(wasm, a.tasks)
        print(f"memory over {a.tasks} tasks: RSS {marks[1_000]:.1f} MB after 1,000, {marks[a.tasks]:.1f} MB after "
              f"{a.tasks} (x{marks[a.tasks] / marks[1_000]:.3f})")
        print(f"throughput, trivial module: {pool_rate:,.0f} tasks/min through the slot pool (2 slots, folder per "
              f"task) vs {bare_rate:,.0f} tasks/min bare loop ({pool_rate / bare_rate:.2f}x)")
    finally:
        sb.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
