"""Pipeline throughput: goals/s from goals.created to plans.created through a real broker and
a real planner worker, against a raw Faust passthrough measured in the same run.

    python -m bench.pipeline [--goals 300] [--refine SECONDS] [--json]

Both workers are started, warmed up (one record through end to end), then fed the same
batch; the clock runs from the first produce to the last output record seen.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka import KafkaBroker
from processors.ids import plan_id
from streams import client, samples
from streams.services import Worker
from topics.admin import create_topics
from topics import registry as T

OUT = "bench.passthrough.out"  # the passthrough's output topic


async def _count(bootstrap: str, topic: str, wanted: set[str], key_of, timeout: float,
                 proc: subprocess.Popen) -> float:
    """Seconds until every wanted key appeared on topic (from the beginning)."""
    seen: set[str] = set()
    started = time.perf_counter()
    async for rec in client.read(bootstrap, topic, deadline_s=timeout,
                                 done=lambda: seen >= wanted or proc.poll() is not None):
        k = key_of(rec)
        if k in wanted:
            seen.add(k)
    if proc.poll() is not None:
        raise RuntimeError(f"the worker exited with {proc.returncode}: see its log")
    if not seen >= wanted:
        raise TimeoutError(f"{topic}: {len(seen)}/{len(wanted)} after {timeout:.0f} s")
    return time.perf_counter() - started


async def _run_batch(bootstrap: str, goals: list[dict], out_topic: str, key_of, want_of,
                     proc: subprocess.Popen) -> float:
    started = time.perf_counter()
    waiter = asyncio.create_task(_count(bootstrap, out_topic, {want_of(g) for g in goals}, key_of, 600, proc))
    await client.produce(bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in goals])
    await waiter
    return time.perf_counter() - started


def measure(bootstrap: str, module: str, out_topic: str, key_of, want_of, n: int, tag: str, logdir: Path,
            **env) -> float:
    """records/s for a batch of n goals through one worker of `module`."""
    worker = Worker(bootstrap, env=env, log_path=logdir / f"{tag}.log", app_id=f"bench-{tag}-{time.time_ns()}",
                    module=module).start()
    proc = worker.proc
    try:
        now = int(time.time() * 1000)
        asyncio.run(_run_batch(bootstrap, samples.sample_goals(1, now, prefix=f"warm-{tag}"), out_topic,
                               key_of, want_of, proc))
        seconds = asyncio.run(_run_batch(bootstrap, samples.sample_goals(n, now, prefix=f"bench-{tag}"),
                                         out_topic, key_of, want_of, proc))
        return n / seconds
    finally:
        worker.stop()


async def _create_out(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if OUT not in await admin.list_topics():
            await admin.create_topics([NewTopic(OUT, T.PLAN_PARTITIONS, 1)])
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--goals", type=int, default=300)
    ap.add_argument("--refine", type=float, default=0.0, help="refine budget per goal (0: fast path only)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="chimera-bench-"))
    with KafkaBroker() as broker:
        bs = broker.bootstrap
        asyncio.run(create_topics(bs))
        asyncio.run(_create_out(bs))
        raw = measure(bs, "bench.passthrough_app", OUT, lambda r: r.key, lambda g: g["goal_id"], args.goals,
                      "passthrough", logdir, BENCH_PASSTHROUGH_OUT=OUT)
        planned = measure(bs, "streams.worker", T.PLANS_CREATED.name, lambda r: r.key,
                          lambda g: plan_id(g["goal_id"]), args.goals, "planner", logdir,
                          PLANNING_REFINE_BUDGET_SECONDS=str(args.refine))
    result = {"goals": args.goals, "refine_budget_s": args.refine, "passthrough_per_s": round(raw, 1),
              "pipeline_goals_per_s": round(planned, 1), "ratio": round(planned / raw, 3)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"pipeline (goals.created -> plans.created, refine {args.refine:g} s): {planned:8.1f} goals/s")
        print(f"raw Faust passthrough, same broker, same run:            {raw:8.1f} records/s")
        print(f"ratio pipeline / passthrough: {planned / raw:.3f}   (logs: {logdir})")


if __name__ == "__main__":
    main()
