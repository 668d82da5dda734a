"""Feedback benchmark (issue 7): execution.feedback through one planner worker on a real broker,
against a raw Faust passthrough of the very same records, and the allocation latency of a ready
task inside the worker, all measured in the same run.

    python -m bench.feedback [--plans 250] [--tasks 8] [--progress 3] [--alloc-goals 300] [--rate 30] [--json]

1. Resources are announced (--pools of them, each with its own capability, so the ledgers of
   several resources share the work) and kept alive by heartbeats.
2. Passthrough: `bench.passthrough_app` copies execution.feedback to bench.feedback.out; its
   group is committed at the end of the topic first, a warm-up goes through, then the timed
   records (the exact bytes the planner gets later) are produced as fast as the producer goes;
   the clock stops when the last copy arrived.
3. Planner: a worker (refine 0, default planning settings otherwise) plans --plans goals of
   --tasks independent tasks each; every task is allocated by its resource's ledger and handed
   out (tasks.assigned). Then the timed feedback goes in: per task STARTED, --progress PROGRESS
   reports and COMPLETED, round by round. The clock stops when every plan's COMPLETED version is
   on plans.updated (each COMPLETED also releases the task's booking at its ledger and publishes a
   version; progress versions are coalesced). Dead letters on execution.feedback.dlq must be 0.
4. Allocation latency: --alloc-goals goals of one task each, offered at --rate goals/s to the same
   worker. For each task: its allocation request's record timestamp (written by the plan's
   partition when the task became ready) -> the ledger's GRANTED record on resources.allocations
   -> its tasks.assigned record (all timestamps set by the worker, one clock). It starts once the
   worker has committed the feedback and the allocation releases it caused (the seconds that took
   after the last COMPLETED version are printed: the ledgers' backlog). Also the p99 of
   the ledger's own decision time from the worker's Prometheus histogram
   (chimera_allocation_decision_seconds, bucket upper bound): the decision and the encoding of its
   records; since the ledger stores in batches (streams/staging.py) it no longer includes the wait
   for the broker's acknowledgement, which the request -> GRANTED timestamps above still show.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.pipeline import cpu_seconds, json_safe, percentile, ratio, wait_committed
from infra.kafka import KafkaBroker
from processors.ids import plan_id
from streams import client
from streams.services import Worker
from streams.simulate import resource_record
from tests.kafka_helpers import free_port
from topics import registry as T
from topics.admin import create_topics
from topics.serde import serde

OUT = "bench.feedback.out"
FEEDBACK = T.EXECUTION_FEEDBACK.name


def _goal(goal_id: str, cap: str, tasks: int, now_ms: int) -> dict:
    return {"goal_id": goal_id, "title": f"feedback bench {goal_id}", "created_at_ms": now_ms,
            "tasks": [{"task_id": f"t{i}", "name": f"t{i}", "duration_hours": 1.0, "depends_on": [],
                       "capabilities": [cap], "resources": {"agents": 1.0}} for i in range(tasks)]}


def feedback_records(goals: list[dict], progress: int, now_ms: int) -> list[tuple[bytes, bytes]]:
    """(key, Avro value) per report, round by round: every task STARTED, then each PROGRESS
    round, then every task COMPLETED (a task's reports stay in order on its plan's partition)."""
    codec = serde(FEEDBACK)
    rounds: list[list[tuple[str, float | None]]] = [[("STARTED", None)]]
    rounds += [[("PROGRESS", round(100 * (i + 1) / (progress + 1), 1))] for i in range(progress)]
    rounds += [[("COMPLETED", None)]]
    out = []
    for r, [(status, pct)] in enumerate(rounds):
        for g in goals:
            pid = plan_id(g["goal_id"])
            for t in g["tasks"]:
                rec = {"event_id": f"bench-fb-{pid}-{t['task_id']}-{r}", "plan_id": pid, "task_id": t["task_id"],
                       "status": status, "reported_at_ms": now_ms, "attempt": 1}
                if pct is not None:
                    rec["progress_pct"] = pct
                if status == "COMPLETED":
                    rec["actual_hours"] = 1.0
                out.append((pid.encode(), codec.encode(rec, strict=True)))
    return out


async def _send(producer: AIOKafkaProducer, topic: str, records) -> None:
    futures = [await producer.send(topic, key=k, value=v) for k, v in records]
    await asyncio.gather(*futures)


async def _until(consumer: AIOKafkaConsumer, seen, done, timeout: float, proc) -> float:
    """Feed every record to seen(record, now) until done(); returns perf_counter at done."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}: see its log")
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        batch = await consumer.getmany(timeout_ms=100)
        now = time.perf_counter()
        for msgs in batch.values():
            for m in msgs:
                seen(m, now)
    return time.perf_counter()


async def _heartbeats(producer: AIOKafkaProducer, resources: list[dict], every_s: float = 3.0) -> None:
    codec = serde(T.RESOURCES_AVAILABILITY.name)
    while True:
        now = int(time.time() * 1000)
        await _send(producer, T.RESOURCES_AVAILABILITY.name,
                    [(r["resource_id"].encode(), codec.encode(dict(r, updated_at_ms=now, heartbeat_ms=now), strict=True))
                     for r in resources])
        await asyncio.sleep(every_s)


def _histogram(port: int, name: str) -> dict[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            out[math.inf if le == "+Inf" else float(le)] = float(line.split()[-1])
    return out


def _bucket_p99(before: dict[float, float], after: dict[float, float]) -> tuple[float, int]:
    """The upper bound of the bucket holding the 99th percentile of what was observed between
    two scrapes (cumulative buckets), and the number of observations."""
    diff = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    n = diff[-1][1] if diff else 0
    for le, c in diff:
        if n and c >= 0.99 * n:
            return le, int(n)
    return math.nan, int(n)


async def passthrough_phase(bs: str, records: list[tuple[bytes, bytes]], warm: list[tuple[bytes, bytes]],
                            logdir: Path) -> dict:
    app_id = f"bench-fbpass-{time.time_ns()}"
    await client.commit_at_end(bs, app_id, [FEEDBACK, OUT])
    w = Worker(bs, env={"BENCH_PASSTHROUGH_IN": FEEDBACK, "BENCH_PASSTHROUGH_OUT": OUT}, app_id=app_id,
               module="bench.passthrough_app", log_path=logdir / "passthrough.log").start()
    producer = AIOKafkaProducer(bootstrap_servers=bs, acks="all", enable_idempotence=True)
    await producer.start()
    out = await client.tail_from_end(bs, [OUT], fetch_max_wait_ms=100)
    try:
        got = [0]
        await _send(producer, FEEDBACK, warm)
        await _until(out, lambda m, now: got.__setitem__(0, got[0] + 1), lambda: got[0] >= len(warm), 300, w.proc)
        await wait_committed(bs, app_id, (FEEDBACK,), w.proc)
        got[0] = 0
        cpu0 = cpu_seconds(w.proc.pid)
        t0 = time.perf_counter()
        await _send(producer, FEEDBACK, records)
        t1 = await _until(out, lambda m, now: got.__setitem__(0, got[0] + 1), lambda: got[0] >= len(records),
                          max(120.0, len(records) / 100), w.proc)
        cpu = cpu_seconds(w.proc.pid) - cpu0
        return {"records": len(records), "seconds": round(t1 - t0, 2), "per_s": round(len(records) / (t1 - t0), 1),
                "cpu_ms_per_record": round(cpu * 1000 / len(records), 3), "log": str(logdir / "passthrough.log")}
    finally:
        await out.stop()
        await producer.stop()
        w.stop()


async def planner_phase(bs: str, args, goals: list[dict], records: list[tuple[bytes, bytes]], warm_goals: list[dict],
                        warm: list[tuple[bytes, bytes]], resources: list[dict], logdir: Path, say=print) -> dict:
    app_id = f"bench-fbplan-{time.time_ns()}"
    await client.commit_at_end(bs, app_id, [t.name for t in T.TOPICS if t.name != T.RESOURCES_AVAILABILITY.name])
    port = free_port()
    w = Worker(bs, env={"PLANNING_REFINE_BUDGET_SECONDS": "0", "CHIMERA_METRICS_PORT": str(port)}, app_id=app_id,
               log_path=logdir / "planner.log").start()
    producer = AIOKafkaProducer(bootstrap_servers=bs, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    beats = asyncio.create_task(_heartbeats(producer, resources))
    outs = await client.tail_from_end(bs, [T.TASKS_ASSIGNED.name, T.PLANS_UPDATED.name, FEEDBACK + ".dlq", T.ALLOCATION_REQUESTS.name,
                            T.RESOURCES_ALLOCATIONS.name], fetch_max_wait_ms=100)
    goal_codec = serde(T.GOALS_CREATED.name)
    res: dict = {"log": str(logdir / "planner.log")}
    try:
        await asyncio.sleep(2.0)   # the worker's global table has the resources

        async def plan_and_run(batch: list[dict], feedback: list[tuple[bytes, bytes]], timed: bool) -> dict:
            want_assigned = sum(len(g["tasks"]) for g in batch)
            pids = {plan_id(g["goal_id"]) for g in batch}
            assigned, completed, dlq, updates = set(), set(), [0], [0]

            def seen(m, now):
                if m.topic == FEEDBACK + ".dlq":
                    dlq[0] += 1
                    return
                key = m.key.decode() if m.key else ""
                if key not in pids:
                    return
                v = serde(m.topic).decode(m.value)
                if m.topic == T.TASKS_ASSIGNED.name:
                    assigned.add((key, v["task"]["task_id"]))
                elif m.topic == T.PLANS_UPDATED.name:
                    updates[0] += 1
                    if v["status"] == "COMPLETED":
                        completed.add(key)
            await _send(producer, T.GOALS_CREATED.name,
                        [(g["goal_id"].encode(), goal_codec.encode(g, strict=True)) for g in batch])
            await _until(outs, seen, lambda: len(assigned) >= want_assigned, 600, w.proc)
            if timed:
                await wait_committed(bs, app_id, (T.GOALS_BY_PLAN.name, T.ALLOCATION_DECISIONS.name), w.proc)
                say(f"  planner: {len(pids)} plans, {want_assigned} tasks handed out; {len(feedback)} feedback ...")
            updates[0] = 0
            cpu0 = cpu_seconds(w.proc.pid)
            t0 = time.perf_counter()
            await _send(producer, FEEDBACK, feedback)
            t1 = await _until(outs, seen, lambda: completed >= pids, max(300.0, len(feedback) / 50), w.proc)
            cpu = cpu_seconds(w.proc.pid) - cpu0
            return {"plans": len(pids), "tasks": want_assigned, "records": len(feedback), "seconds": round(t1 - t0, 2),
                    "per_s": round(len(feedback) / (t1 - t0), 1), "cpu_ms_per_record": round(cpu * 1000 / len(feedback), 3),
                    "plans_updated": updates[0], "feedback_dead_letters": dlq[0]}

        await plan_and_run(warm_goals, warm, timed=False)
        res.update(await plan_and_run(goals, records, timed=True))

        # allocation latency of a ready task, at a fixed offered rate: once the ledgers have decided
        # the releases the feedback burst sent them (their wait is reported, not hidden)
        res["release_backlog_s"] = round(await wait_committed(bs, app_id, (FEEDBACK, T.ALLOCATION_REQUESTS.name),
                                                              w.proc, timeout=300), 2)
        say(f"  planner: {args.alloc_goals} one-task goals at {args.rate:g}/s (allocation latency) ...")
        now_ms = int(time.time() * 1000)
        single = [_goal(f"alloc-{now_ms}-{i}", resources[i % len(resources)]["capabilities"][0], 1, now_ms)
                  for i in range(args.alloc_goals)]
        pids = {plan_id(g["goal_id"]) for g in single}
        req, granted, assigned = {}, {}, {}

        def seen(m, now):
            if m.topic not in (T.ALLOCATION_REQUESTS.name, T.RESOURCES_ALLOCATIONS.name, T.TASKS_ASSIGNED.name):
                return
            v = serde(m.topic).decode(m.value)
            if v.get("plan_id") not in pids:
                return
            if m.topic == T.ALLOCATION_REQUESTS.name and v["kind"] == "REQUEST":
                req.setdefault(v["plan_id"], m.timestamp)
            elif m.topic == T.RESOURCES_ALLOCATIONS.name and v["decision"] == "GRANTED":
                granted.setdefault(v["plan_id"], m.timestamp)
            elif m.topic == T.TASKS_ASSIGNED.name:
                assigned.setdefault(v["plan_id"], m.timestamp)
        hist0 = _histogram(port, "chimera_allocation_decision_seconds")
        cpu0 = cpu_seconds(w.proc.pid)
        pump = asyncio.create_task(_until(outs, seen, lambda: len(assigned) >= len(pids), 600, w.proc))
        t0 = time.perf_counter()
        for i, g in enumerate(single):
            delay = t0 + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(T.GOALS_CREATED.name, key=g["goal_id"].encode(), value=goal_codec.encode(g, strict=True))
        await pump
        cpu = cpu_seconds(w.proc.pid) - cpu0
        hist1 = _histogram(port, "chimera_allocation_decision_seconds")
        to_grant = [granted[p] - req[p] for p in pids if p in req and p in granted]
        to_assign = [assigned[p] - req[p] for p in pids if p in req and p in assigned]
        p99_bucket, n = _bucket_p99(hist0, hist1)
        res["allocation"] = {
            "tasks": len(pids), "offered_per_s": args.rate, "missing": len(pids) - len(to_assign),
            "request_to_granted_ms": {"p50": percentile(to_grant, 50), "p99": percentile(to_grant, 99),
                                      "max": max(to_grant, default=math.nan)},
            "request_to_assigned_ms": {"p50": percentile(to_assign, 50), "p99": percentile(to_assign, 99),
                                       "max": max(to_assign, default=math.nan)},
            "ledger_decision_p99_bucket_ms": p99_bucket * 1000, "ledger_decisions": n,
            "cpu_ms_per_goal": round(cpu * 1000 / len(pids), 2)}
        return res
    finally:
        beats.cancel()
        await outs.stop()
        await producer.stop()
        w.stop()


def run(args, say=print) -> dict:
    logdir = Path(tempfile.mkdtemp(prefix="chimera-bench-feedback-"))
    now_ms = int(time.time() * 1000)
    resources = [resource_record(f"bench-pool-{i}", capabilities=[f"pool-{i}"], agents=100_000.0, cost=1.0 + i)
                 for i in range(args.pools)]
    goals = [_goal(f"fb-{now_ms}-{i}", f"pool-{i % args.pools}", args.tasks, now_ms) for i in range(args.plans)]
    warm_goals = [_goal(f"fbwarm-{now_ms}-{i}", f"pool-{i % args.pools}", args.tasks, now_ms)
                  for i in range(max(4, args.plans // 10))]
    records = feedback_records(goals, args.progress, now_ms)
    warm = feedback_records(warm_goals, args.progress, now_ms)
    result: dict = {"plans": args.plans, "tasks_per_plan": args.tasks, "progress_reports": args.progress,
                    "pools": args.pools, "logs": str(logdir)}
    with KafkaBroker() as broker:
        bs = broker.bootstrap
        asyncio.run(create_topics(bs))

        async def out_topic():
            admin = AIOKafkaAdminClient(bootstrap_servers=bs)
            await admin.start()
            try:
                if OUT not in await admin.list_topics():
                    await admin.create_topics([NewTopic(OUT, T.PLAN_PARTITIONS, 1)])
            finally:
                await admin.close()
        asyncio.run(out_topic())
        say(f"passthrough: {len(records)} feedback records ...")
        result["passthrough"] = asyncio.run(passthrough_phase(bs, records, warm, logdir))
        say("planner ...")
        result["planner"] = asyncio.run(planner_phase(bs, args, goals, records, warm_goals, warm, resources, logdir,
                                                      say=say))
    result["planner_over_passthrough"] = ratio(result["planner"]["per_s"], result["passthrough"]["per_s"])
    return result


def report(r: dict) -> str:
    pl, pt, al = r["planner"], r["passthrough"], r["planner"]["allocation"]
    return "\n".join([
        f"feedback through the planner worker ({pl['records']} reports for {pl['tasks']} tasks of {pl['plans']} plans, "
        f"until every plan's COMPLETED version): {pl['per_s']:8.1f} records/s, CPU {pl['cpu_ms_per_record']:.3f} ms/record, "
        f"{pl['plans_updated']} plans.updated, {pl['feedback_dead_letters']} dead letters; ledgers done with the "
        f"releases {pl['release_backlog_s']:.1f} s later",
        f"raw Faust passthrough of the same records (same broker, same run):               {pt['per_s']:8.1f} records/s, "
        f"CPU {pt['cpu_ms_per_record']:.3f} ms/record",
        f"planner / passthrough {r['planner_over_passthrough']:.3f}   (goal >= 0.5x, and > 1,000 progress updates/s)",
        f"allocation of a ready task ({al['tasks']} one-task goals at {al['offered_per_s']:g}/s, {r['pools']} resources; "
        f"worker timestamps): request -> GRANTED p50 {al['request_to_granted_ms']['p50']:.0f} ms, "
        f"p99 {al['request_to_granted_ms']['p99']:.0f} ms; request -> tasks.assigned p50 "
        f"{al['request_to_assigned_ms']['p50']:.0f} ms, p99 {al['request_to_assigned_ms']['p99']:.0f} ms, "
        f"max {al['request_to_assigned_ms']['max']:.0f} ms" + (f"; {al['missing']} missing" if al["missing"] else ""),
        f"ledger decision time inside the worker (Prometheus histogram, {al['ledger_decisions']} decisions): "
        f"p99 <= {al['ledger_decision_p99_bucket_ms']:g} ms   (goal p99 <= 10 ms)",
        f"(worker logs: {r['logs']})"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plans", type=int, default=250)
    ap.add_argument("--tasks", type=int, default=8, help="independent tasks per plan")
    ap.add_argument("--progress", type=int, default=3, help="PROGRESS reports per task")
    ap.add_argument("--pools", type=int, default=4, help="resources (each its own ledger)")
    ap.add_argument("--alloc-goals", type=int, default=300)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    result = run(args, say=say)
    print(json.dumps(json_safe(result)) if args.json else report(result))


if __name__ == "__main__":
    main()
