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
5. End to end on the real broker (`--e2e N`): two executor processes (2 slots each, own consumer
   groups), N noop assignments on tasks.assigned allocated half to each (assigned_to), until
   every COMPLETED is readable (read_committed) on execution.feedback: tasks/min from the
   first assignment produced to the last feedback, and the assignment -> feedback latency
   (broker timestamps), against the same trivial module in a bare loop in the same run.
   Goal: >= 1,000 tasks/min. KAFKA_BOOTSTRAP, else a local broker started here.
   Meanwhile each executor SERVICE process's RSS (/proc/<pid>/statm) is sampled after the
   warm-up and every N/40 tasks: first, max and last sample and last / first (the goal's
   "executor's own memory flat after 10,000 tasks": `--only-e2e --e2e 10000`; the in-process
   figure 3 leaves out Kafka clients, the feedback path and what the service keeps).

    python -m bench.executor [--tasks 10000] [--e2e 3000] [--only-e2e]
"""
from __future__ import annotations

import argparse
import os
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


def statm_rss_mb(pid: int) -> float:
    """Resident memory of another process (statm's second field is resident pages)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


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


def _noop_assignment(plan: str, i: int, executor_id: str) -> dict:
    from processors import ids
    task = {"task_id": f"t{i}", "name": "wasm: noop", "description": "", "phase": "", "component": "",
            "depends_on": [], "estimate": {"optimistic": 1.0, "most_likely": 1.0, "pessimistic": 1.0},
            "resources": {}, "capabilities": [], "success_criteria": [], "validation": [],
            "risk_mitigation": False, "start_hours": 0.0, "finish_hours": 1.0, "earliest_start_hours": 0.0,
            "latest_start_hours": 0.0, "slack_hours": 0.0, "critical": True}
    now = int(time.time() * 1000)
    return {"event_id": ids.event_id("bench.assigned", plan, i), "plan_id": plan, "goal_id": "bench-" + plan,
            "plan_version": 1, "task": task, "assigned_to": executor_id, "assigned_at_ms": now, "attempt": 1,
            "deadline_ms": now + 600_000}


def end_to_end(n: int, root: Path) -> tuple[float, list[float], dict, dict]:
    """Two executor processes, n noop assignments (half to each): tasks/min, latencies (ms), and
    per executor its RSS samples (tasks done by then in all, MB)."""
    import asyncio
    import itertools
    import json
    import subprocess
    import sys

    from confluent_kafka import Consumer, Producer, TopicPartition

    from streams import client
    from streams.services import broker
    from topics import registry as T
    from topics.admin import create_topics
    from topics.serde import serde

    run = f"{os.getpid()}-{int(time.time())}"
    ids_ = [f"bench-ex-{i}-{run}" for i in (1, 2)]
    with broker() as bootstrap:
        asyncio.run(create_topics(bootstrap))
        for eid in ids_:
            asyncio.run(client.commit_at_end(bootstrap, f"chimera-executor.{eid}", [T.TASKS_ASSIGNED.name]))
        procs = [subprocess.Popen([sys.executable, "-m", "executor.service", "--bootstrap", bootstrap, "--id", eid,
                                   "--slots", "2", "--heartbeat-s", "5", "--work-root", str(root / eid)],
                                  stdout=open(root / f"{eid}.log", "w"), stderr=subprocess.STDOUT)
                 for eid in ids_]
        fb = serde(T.EXECUTION_FEEDBACK.name)
        enc = serde(T.TASKS_ASSIGNED.name)
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-fb-{run}", "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
        topic = T.EXECUTION_FEEDBACK.name
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                  for p in parts])
        p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5})
        counter = itertools.count()
        assigned_at: dict[str, int] = {}

        def batch(k: int, prefix: str) -> tuple[float, set[str]]:
            plans = [f"plan-bench-{prefix}-{run}-{j}" for j in range(16)]
            want = set()
            t0 = time.perf_counter()
            for _ in range(k):
                i = next(counter)
                a = _noop_assignment(plans[i % len(plans)], i, ids_[i % 2])
                want.add(a["plan_id"] + "/" + a["task"]["task_id"])
                assigned_at[a["plan_id"] + "/" + a["task"]["task_id"]] = a["assigned_at_ms"]
                p.produce(T.TASKS_ASSIGNED.name, key=a["plan_id"].encode(), value=enc.encode(a))
                p.poll(0)
            p.flush(30)
            return t0, want

        rss: dict[str, list[tuple[int, float]]] = {eid: [] for eid in ids_}

        def sample(done: int) -> None:
            for eid, pr in zip(ids_, procs):
                rss[eid].append((done, statm_rss_mb(pr.pid)))

        def wait(want: set[str], timeout: float, every: int = 0) -> tuple[float, list[float], dict]:
            lat, by, last = [], {}, time.perf_counter()
            deadline = time.monotonic() + timeout
            total, next_sample = len(want), every
            while want and time.monotonic() < deadline:
                for m in c.consume(500, 0.5):
                    if m.error():
                        continue
                    r = fb.decode(m.value())
                    k = r["plan_id"] + "/" + r["task_id"]
                    if r["status"] == "COMPLETED" and k in want:
                        want.discard(k)
                        last = time.perf_counter()
                        lat.append(m.timestamp()[1] - assigned_at[k])
                        ex = json.loads(r["message"])["executor"]
                        by[ex] = by.get(ex, 0) + 1
                        if every and total - len(want) >= next_sample:
                            sample(total - len(want))
                            next_sample += every
            if want:
                raise RuntimeError(f"{len(want)} tasks without COMPLETED feedback")
            return last, lat, by

        try:
            _, want = batch(40, "warm")                     # the executors joined their groups, modules loaded
            wait(want, 120)
            sample(0)
            t0, want = batch(n, "run")
            last, lat, by = wait(want, max(600.0, n * 0.12), every=max(1, n // 40))
        finally:
            for pr in procs:
                pr.terminate()
            for pr in procs:
                pr.wait(30)
            for eid in ids_:
                tail = [ln for ln in (root / f"{eid}.log").read_text().splitlines() if "stopped:" in ln]
                print("  ", tail[-1] if tail else f"{eid}: no summary")
            tomb = Producer({"bootstrap.servers": bootstrap})
            for eid in ids_:
                tomb.produce(T.RESOURCES_AVAILABILITY.name, key=eid.encode(), value=None)
            tomb.flush(10)
            c.close()
        return n / (last - t0) * 60, lat, by, rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--starts", type=int, default=3_000)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--e2e", type=int, default=3_000, help="assignments through Kafka and two executors (0: skip)")
    ap.add_argument("--only-e2e", action="store_true")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    sb = Sandbox(root / "work", cache_dir=root / "cwasm")
    wasm = REGISTRY["noop"].wasm().read_bytes()
    try:
        if a.e2e:
            rate, lat, by, rss = end_to_end(a.e2e, root)
            bare_rate = bare_loop(wasm, a.e2e)
            print(f"end to end, two executors (2 slots each) on the real broker: {rate:,.0f} tasks/min from the first "
                  f"assignment to the last COMPLETED (goal >= 1,000: {'met' if rate >= 1000 else 'NOT met'}; "
                  f"per executor {by}); assignment -> feedback p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms; "
                  f"same noop module in a bare loop {bare_rate:,.0f} tasks/min ({rate / bare_rate:.4f}x)")
            for eid, xs in rss.items():
                (_, first), (done, last) = xs[0], xs[-1]
                tenth = next((mb for k, mb in xs if k >= a.e2e // 10), first)
                print(f"executor service {eid} RSS over {done:,} tasks in all ({a.e2e // 2:,} its own): "
                      f"{first:.1f} MB after the warm-up, {tenth:.1f} MB after {a.e2e // 10:,}, max "
                      f"{max(mb for _, mb in xs):.1f}, last {last:.1f} MB (last / first {last / first:.3f}, "
                      f"last / after {a.e2e // 10:,} {last / tenth:.3f}; {len(xs)} samples)")
        if a.only_e2e:
            return
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
