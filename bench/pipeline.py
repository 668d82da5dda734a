"""Pipeline benchmark: goals.created -> plans.created through a real broker and a real planner
worker, against a raw Faust passthrough and the planner's own in-process throughput, all
measured in the same run on the same goals.

    python -m bench.pipeline [--goals 2000] [--latency-goals 1000] [--rate 100] [--refine S]
                             [--rss [--rss-goals 100000]] [--json]

For each worker (the passthrough baseline, then the planner):

1. its consumer group's offsets are committed at the end of every topic before it starts, so it
   never re-reads what an earlier phase produced (a fresh group would start from `earliest`);
2. a warm-up batch goes through end to end, and the benchmark waits until the worker has
   *committed* its offsets past the warm-up (goals.created, and the planner's internal
   chimera.goals.by_plan), so the timed batch is only the new goals;
3. a reader, already assigned to the output topics and positioned at their end, records when
   each output arrives: throughput runs from the first produce to the last wanted output, with
   no consumer start-up or fetch wait inside the clock; the reader then drains the topics and
   the benchmark checks there is exactly one plan per timed goal (and nothing else);
4. the worker process's CPU time (/proc/<pid>/stat) is read before and after the timed batch;
5. a paced producer offers goals at a fixed rate (one every 1/rate s by schedule) and the
   goal -> output latency of each goal is the reader's receive time minus its send time.

The ceiling (`plan_in_process`) decodes, plans and encodes the planner's timed batch in this
process, before the planner worker sees it. `--rss` then feeds the planner --rss-goals more
goals at full speed and samples its RSS (issue 6: flat within +-10% over 100,000 goals).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka import KafkaBroker
from processors import lifecycle
from processors.config import PlanningConfig
from processors.ids import plan_id
from streams import client, codec, samples, settings, state as plan_state
from streams.services import Worker
from topics import registry as T
from topics.admin import create_topics
from topics.serde import serde

OUT = "bench.passthrough.out"  # the passthrough's output topic
GOALS = T.GOALS_CREATED.name
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------- pure helpers

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in [0, 100]) of values; nan when there are none."""
    if not values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not in [0, 100]")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(sent: dict[str, float], received: dict[str, float]) -> dict:
    """p50/p99/max (ms) of received[k] - sent[k] over the keys sent; keys never received are
    counted as missing (not as a latency)."""
    lat = [(received[k] - t) * 1000 for k, t in sent.items() if k in received]
    return {"count": len(lat), "missing": len(sent) - len(lat),
            "p50_ms": round(percentile(lat, 50), 1), "p99_ms": round(percentile(lat, 99), 1),
            "max_ms": round(max(lat), 1) if lat else math.nan}


def offered_rate(send_times: Iterable[float]) -> float:
    """Achieved rate of a paced producer: (n - 1) intervals over first..last send."""
    ts = sorted(send_times)
    return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else math.nan


def parse_proc_stat(text: str) -> float:
    """CPU seconds (user + system) from the text of /proc/<pid>/stat (the command name, in
    parentheses, may itself contain spaces and parentheses)."""
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15 of stat(5)


class Workers:
    """The worker processes of one phase (`--workers`): alive while all are, CPU summed."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def poll(self) -> int | None:
        for w in self.workers:
            if w.proc.poll() is not None:
                return w.proc.returncode
        return None

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        return parse_proc_stat(fh.read())


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_SIZE


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else math.nan


def json_safe(x):
    """NaN (no samples) as null, so that --json stays valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


# ----------------------------------------------------------------------------- the ceiling

def plan_in_process(records: Sequence[bytes], config: PlanningConfig) -> Counter:
    """What the planner worker does per goal, without Kafka: decode the Avro goal, run the
    lifecycle's on_goal (fast path), encode its records and the plan's stored state.
    Returns the outputs per topic."""
    goals, out = serde(GOALS), Counter()
    for raw in records:
        goal = codec.goal_from_record(goals.decode(raw))
        state, events = lifecycle.on_goal(None, goal, {}, config, received_at_ms=goal.created_at_ms)
        for o in codec.records(events):
            serde(o.topic).encode(o.value)
            out[o.topic] += 1
        plan_state.encode(state)
    return out


def measure_ceiling(records: Sequence[bytes], config: PlanningConfig) -> dict:
    plan_in_process(records[:20], config)  # warm (imports, caches), like the worker's warm-up
    cpu0, t0 = time.process_time(), time.perf_counter()
    outputs = plan_in_process(records, config)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"goals_per_s": round(len(records) / seconds, 1), "cpu_ms_per_goal": round(cpu * 1000 / len(records), 2),
            "outputs": dict(outputs)}


# ----------------------------------------------------------------------------- Kafka helpers

class Reader:
    """Assigned to every partition of some topics and positioned at their end before anything is
    produced; notes when each key first arrives on `timed` and counts every record."""

    def __init__(self, bootstrap: str, timed: str, others: Sequence[str] = ()) -> None:
        self.bootstrap, self.timed, self.topics = bootstrap, timed, [timed, *others]
        self.first: dict[str, float] = {}      # key on `timed` -> receive time (perf_counter)
        self.stamp: dict[str, float] = {}      # key on `timed` -> the record's timestamp (s, wall clock)
        self.totals: Counter = Counter()       # records per topic
        self.dups = 0                          # records on `timed` whose key was seen already
        self._missing: set[str] = set()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> "Reader":
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                         auto_offset_reset="latest", fetch_max_wait_ms=100)
        await self.consumer.start()
        for topic in self.topics:
            await self.consumer._client._wait_on_metadata(topic)
        self.tps = [TopicPartition(t, p) for t in self.topics for p in sorted(self.consumer.partitions_for_topic(t))]
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_end(*self.tps)
        for tp in self.tps:
            await self.consumer.position(tp)   # resolve the end offsets now, before any produce
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for tp, msgs in batch.items():
                self.totals[tp.topic] += len(msgs)
                if tp.topic != self.timed:
                    continue
                for m in msgs:
                    key = m.key.decode()
                    if key in self.first:
                        self.dups += 1
                    else:
                        self.first[key] = now
                        self.stamp[key] = m.timestamp / 1000
                        self._missing.discard(key)
            if batch:
                self._arrived.set()

    def reset(self) -> None:
        """Start a new window: forget keys and counts."""
        self.first, self.stamp, self.totals, self.dups = {}, {}, Counter(), 0

    async def wait_for(self, keys: Iterable[str], timeout: float, proc: "Workers") -> float:
        """The receive time of the last of keys on the timed topic."""
        keys = list(keys)
        self._missing = {k for k in keys if k not in self.first}
        deadline = time.monotonic() + timeout
        while self._missing:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}: see its log")
            if self._task.done():
                self._task.result()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.timed}: {len(keys) - len(self._missing)}/{len(keys)} after {timeout:.0f} s")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        return max(self.first[k] for k in keys)

    async def drain(self, grace: float = 1.0) -> None:
        """Read up to the current end of every topic, then `grace` seconds more (late duplicates)."""
        ends = await self.consumer.end_offsets(self.tps)
        deadline = time.monotonic() + 60
        while [tp for tp, end in ends.items() if await self.consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError("the reader does not reach the end of its topics")
            await asyncio.sleep(0.05)
        await asyncio.sleep(grace)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self.consumer.stop()


async def wait_committed(bootstrap: str, group: str, topics: Sequence[str], proc: "Workers",
                         timeout: float = 60) -> float:
    """Wait until `group` has committed every partition of topics at (or past) its current end;
    returns the seconds waited. Under exactly_once (CHIMERA_PROCESSING_GUARANTEE) a transaction's
    commit marker takes the last offset of a partition the worker wrote to, so its committed
    offset stops one short of the end there."""
    slack = 1 if os.environ.get("CHIMERA_PROCESSING_GUARANTEE") == "exactly_once" else 0
    started = time.monotonic()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        tps = await client.partitions(consumer, topics)
        ends = await consumer.end_offsets(tps)
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            behind = {tp: (committed[tp].offset if tp in committed else -1, end)
                      for tp, end in ends.items() if tp not in committed or committed[tp].offset < end - slack}
            if not behind:
                return time.monotonic() - started
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}: see its log")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{group} has not committed past the warm-up after {timeout:.0f} s: {behind}")
            await asyncio.sleep(0.25)
    finally:
        await admin.close()
        await consumer.stop()


async def send_all(producer: AIOKafkaProducer, records: Sequence[tuple[str, bytes]]) -> None:
    futures = [await producer.send(GOALS, key=k.encode(), value=v) for k, v in records]
    await asyncio.gather(*futures)


async def send_paced(producer: AIOKafkaProducer, records: Sequence[tuple[str, bytes]], rate: float,
                     wall: dict[str, float] | None = None) -> dict[str, float]:
    """One record every 1/rate s by an absolute schedule (a late send does not shift the next
    ones); returns each key's send time (perf_counter), and fills `wall` with time.time()."""
    interval, sent, futures = 1.0 / rate, {}, []
    t0 = time.perf_counter() + 0.01
    for i, (k, v) in enumerate(records):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[k] = time.perf_counter()
        if wall is not None:
            wall[k] = time.time()
        futures.append(await producer.send(GOALS, key=k.encode(), value=v))
    await asyncio.gather(*futures)
    return sent


def encode_goals(goals: list[dict]) -> list[tuple[str, bytes]]:
    return [(g["goal_id"], serde(GOALS).encode(g, strict=True)) for g in goals]


async def _create_out(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if OUT not in await admin.list_topics():
            await admin.create_topics([NewTopic(OUT, T.PLAN_PARTITIONS, 1)])
    finally:
        await admin.close()


# ----------------------------------------------------------------------------- one worker

@dataclasses.dataclass
class Phase:
    """How to run and observe one kind of worker."""
    tag: str
    module: str
    out_topic: str                      # the output whose arrival stops the clock
    out_key: Callable[[str], str]       # goal id -> key of its record on out_topic
    committed_topics: tuple[str, ...]   # topics it must have committed past the warm-up
    other_outputs: tuple[str, ...] = ()  # counted, not timed
    env: dict[str, str] = dataclasses.field(default_factory=dict)


async def wait_settled(logs: Sequence[Path], proc: "Workers", quiet_s: float = 3.0, timeout: float = 120) -> float:
    """Several workers of one group: wait until each says it is ready and no partition has
    been assigned for `quiet_s` (the group's rebalances are over before anything is timed)."""
    started = time.monotonic()
    marks = ("[^Worker]: Ready", "Setting newly assigned partitions")
    last, seen = time.monotonic(), None
    while True:
        texts = [log.read_text(errors="replace") if log.exists() else "" for log in logs]
        counts = tuple(t.count(marks[1]) for t in texts)
        if counts != seen:
            seen, last = counts, time.monotonic()
        if all(marks[0] in t for t in texts) and time.monotonic() - last >= quiet_s:
            return time.monotonic() - started
        if proc.poll() is not None:
            raise RuntimeError(f"a worker exited with {proc.returncode}: see its log")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the workers' group did not settle in {timeout:.0f} s")
        await asyncio.sleep(0.25)


async def run_phase(bs: str, broker_pid: int, ph: Phase, timed: list[tuple[str, bytes]],
                    paced: list[tuple[str, bytes]], rate: float, warmup: int, logdir: Path,
                    rss_goals: int = 0, rss_limit_mb: float = 0, workers: int = 1, say=print) -> dict:
    app_id = f"bench-{ph.tag}-{time.time_ns()}"
    await client.commit_at_end(bs, app_id, [t.name for t in T.TOPICS] + [OUT])
    logs = [logdir / (f"{ph.tag}.log" if workers == 1 else f"{ph.tag}-{i}.log") for i in range(workers)]
    proc = Workers([Worker(bs, env=ph.env, log_path=log, app_id=app_id, module=ph.module).start() for log in logs])
    res = {"log": ", ".join(map(str, logs)), "workers": workers}
    reader = producer = None
    try:
        reader = await Reader(bs, ph.out_topic, ph.other_outputs).start()
        producer = AIOKafkaProducer(bootstrap_servers=bs, acks="all", enable_idempotence=True)
        await producer.start()

        if workers > 1:
            res["settle_s"] = round(await wait_settled(logs, proc), 1)
        # warm-up, then wait for the worker to commit past it
        warm = encode_goals(samples.sample_goals(warmup, int(time.time() * 1000), prefix=f"warm-{ph.tag}"))
        t0 = time.perf_counter()
        await send_all(producer, warm)
        await reader.wait_for([ph.out_key(k) for k, _ in warm], 300, proc)
        res["warmup_s"] = round(time.perf_counter() - t0, 1)
        res["commit_wait_s"] = round(await wait_committed(bs, app_id, ph.committed_topics, proc), 1)
        await reader.drain(grace=0.5)
        reader.reset()

        # throughput: the timed batch, as fast as the producer goes
        say(f"  {ph.tag}: {len(timed)} goals ...")
        gc.collect()
        cpu0, bcpu0 = proc.cpu_seconds(), cpu_seconds(broker_pid)
        t0 = time.perf_counter()
        await send_all(producer, timed)
        produced = time.perf_counter() - t0
        t_last = await reader.wait_for([ph.out_key(k) for k, _ in timed], max(120.0, len(timed) / 5), proc)
        cpu1, bcpu1 = proc.cpu_seconds(), cpu_seconds(broker_pid)
        seconds = t_last - t0
        await reader.drain()
        wanted = {ph.out_key(k) for k, _ in timed}
        res.update({
            "goals": len(timed), "seconds": round(seconds, 2), "per_s": round(len(timed) / seconds, 1),
            "produce_s": round(produced, 2),
            "cpu_ms_per_goal": round((cpu1 - cpu0) * 1000 / len(timed), 2),
            "broker_cpu_ms_per_goal": round((bcpu1 - bcpu0) * 1000 / len(timed), 2),
            "outputs": dict(reader.totals),
            "unexpected_outputs": len(set(reader.first) - wanted), "duplicate_outputs": reader.dups,
        })
        res["one_output_per_goal"] = (reader.totals[ph.out_topic] == len(timed) and not reader.dups
                                      and set(reader.first) == wanted)
        reader.reset()

        # latency at a fixed offered rate
        if paced:
            say(f"  {ph.tag}: {len(paced)} goals at {rate:g}/s ...")
            cpu0 = proc.cpu_seconds()
            wall: dict[str, float] = {}
            sent = await send_paced(producer, paced, rate, wall)
            await reader.wait_for([ph.out_key(k) for k in sent], 120, proc)
            cpu1 = proc.cpu_seconds()
            await reader.drain()
            received = {k: reader.first[ph.out_key(k)] for k in sent}
            # the output record's timestamp is when the worker produced it (ms, its wall clock):
            # goal sent -> worker produced the output, the rest being the output's hop to the reader
            produced = latency_summary(wall, {k: reader.stamp[ph.out_key(k)] for k in sent})
            res["latency"] = {**latency_summary(sent, received), "offered_per_s": round(offered_rate(sent.values()), 1),
                              "until_worker_produced": {"p50_ms": produced["p50_ms"], "p99_ms": produced["p99_ms"]},
                              "cpu_ms_per_goal": round((cpu1 - cpu0) * 1000 / len(paced), 2),
                              "one_output_per_goal": reader.totals[ph.out_topic] == len(paced) and not reader.dups}
            reader.reset()

        if rss_goals:
            res["rss"] = await rss_run(producer, reader, ph, proc, rss_goals, rss_limit_mb, say)
        return res
    finally:
        if producer is not None:
            await producer.stop()
        if reader is not None:
            await reader.stop()
        for w in proc.workers:
            w.stop()


async def rss_run(producer, reader: Reader, ph: Phase, proc: "Workers", n: int, limit_mb: float,
                  say=print, chunk: int = 2000) -> dict:
    """Feed n goals at full speed (at most two chunks ahead of the worker) and sample its RSS
    about 40 times; stops early past limit_mb."""
    samples_mb: list[tuple[int, float]] = [(0, proc.rss_bytes() / 2**20)]
    every = max(chunk, n // 40)
    say(f"  {ph.tag}: RSS over {n} goals (limit {limit_mb:g} MB) ...")
    sent, started, aborted = 0, time.perf_counter(), False
    while sent < n:
        goals = samples.sample_goals(min(chunk, n - sent), int(time.time() * 1000), prefix=f"rss{sent}")
        records = encode_goals(goals)
        await send_all(producer, records)
        sent += len(records)
        # keep at most one chunk in flight beyond this one: wait for the previous chunk's plans
        while len(reader.first) < sent - chunk:
            await _sample(samples_mb, reader, proc, every)
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}: see its log")
            await asyncio.sleep(0.5)
        await _sample(samples_mb, reader, proc, every)
        if samples_mb[-1][1] > limit_mb:
            aborted = True
            break
    while len(reader.first) < sent:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}: see its log")
        await asyncio.sleep(0.5)
    samples_mb.append((len(reader.first), proc.rss_bytes() / 2**20))
    first, last = samples_mb[0][1], samples_mb[-1][1]
    return {"goals": sent, "seconds": round(time.perf_counter() - started, 1), "aborted_over_limit": aborted,
            "first_mb": round(first, 1), "last_mb": round(last, 1), "max_mb": round(max(m for _, m in samples_mb), 1),
            "last_over_first": round(last / first, 3), "samples": [(g, round(m, 1)) for g, m in samples_mb]}


async def _sample(samples_mb: list, reader: Reader, proc: "Workers", every: int) -> None:
    done = len(reader.first)
    if done - samples_mb[-1][0] >= every:
        samples_mb.append((done, proc.rss_bytes() / 2**20))


# ----------------------------------------------------------------------------- main

def run(args: argparse.Namespace, say=print) -> dict:
    logdir = Path(tempfile.mkdtemp(prefix="chimera-bench-"))
    config = settings.load_planning(env={**os.environ, "PLANNING_REFINE_BUDGET_SECONDS": str(args.refine)})
    now = int(time.time() * 1000)
    result: dict = {"workers": args.workers, "goals": args.goals, "latency_goals": args.latency_goals, "rate": args.rate,
                    "refine_budget_s": args.refine, "logs": str(logdir)}
    with KafkaBroker() as broker:
        bs, broker_pid = broker.bootstrap, broker.proc.pid
        asyncio.run(create_topics(bs))
        asyncio.run(_create_out(bs))

        passthrough = Phase("passthrough", "bench.passthrough_app", OUT, lambda g: g, (GOALS,),
                            env={"BENCH_PASSTHROUGH_OUT": OUT})
        planner = Phase("planner", "streams.worker", T.PLANS_CREATED.name, plan_id, (GOALS, T.GOALS_BY_PLAN.name),
                        other_outputs=(T.TASKS_ASSIGNED.name, T.RISKS_ALERTS.name),
                        env={"PLANNING_REFINE_BUDGET_SECONDS": str(args.refine)})

        def goals(prefix: str, n: int) -> list[tuple[str, bytes]]:
            return encode_goals(samples.sample_goals(n, now, prefix=prefix))

        say("passthrough ...")
        result["passthrough"] = asyncio.run(run_phase(
            bs, broker_pid, passthrough, goals("bench-passthrough", args.goals),
            goals("lat-passthrough", args.latency_goals), args.rate, args.warmup, logdir, workers=args.workers,
            say=say))

        timed = goals("bench-planner", args.goals)
        say("ceiling (in-process planner) ...")
        result["ceiling"] = measure_ceiling([v for _, v in timed], config)

        say("planner ...")
        result["planner"] = asyncio.run(run_phase(
            bs, broker_pid, planner, timed, goals("lat-planner", args.latency_goals), args.rate, args.warmup,
            logdir, rss_goals=args.rss_goals if args.rss else 0, rss_limit_mb=args.rss_limit_mb, workers=args.workers,
            say=say))

    pl, pt, ce = result["planner"], result["passthrough"], result["ceiling"]
    result["ratios"] = {"pipeline_over_ceiling": ratio(pl["per_s"], ce["goals_per_s"]),
                        "pipeline_over_passthrough": ratio(pl["per_s"], pt["per_s"])}
    expected = {t: n for t, n in ce["outputs"].items()}
    got = {t: pl["outputs"].get(t, 0) for t in expected}
    result["planner"]["outputs_match_ceiling"] = got == expected
    return result


def report(r: dict) -> str:
    pl, pt, ce, ra = r["planner"], r["passthrough"], r["ceiling"], r["ratios"]
    lines = [
        f"pipeline (goals.created -> plans.created, refine {r['refine_budget_s']:g} s, {pl['goals']} goals, "
        f"{r.get('workers', 1)} worker{'s' if r.get('workers', 1) > 1 else ''}): "
        f"{pl['per_s']:8.1f} goals/s",
        f"ceiling (the planner in-process, same goals):  {ce['goals_per_s']:8.1f} goals/s"
        f"   pipeline / ceiling     {ra['pipeline_over_ceiling']:.3f}",
        f"raw Faust passthrough (same broker, same run): {pt['per_s']:8.1f} records/s"
        f" pipeline / passthrough {ra['pipeline_over_passthrough']:.3f}",
        f"CPU per goal: planner worker {pl['cpu_ms_per_goal']:.2f} ms, passthrough worker "
        f"{pt['cpu_ms_per_goal']:.2f} ms, in-process planner {ce['cpu_ms_per_goal']:.2f} ms, "
        f"broker {pl['broker_cpu_ms_per_goal']:.2f} ms (planner run) / {pt['broker_cpu_ms_per_goal']:.2f} ms (passthrough run)",
    ]
    for name, ph in (("planner", pl), ("passthrough", pt)):
        if ph.get("one_output_per_goal"):
            lines.append(f"{name}: exactly one output per timed goal ({ph['outputs']})")
        else:
            lines.append(f"{name}: NOT one output per timed goal: outputs {ph['outputs']}, "
                         f"{ph['duplicate_outputs']} duplicates, {ph['unexpected_outputs']} for other goals")
    if not pl.get("outputs_match_ceiling"):
        lines.append(f"planner outputs {pl['outputs']} differ from the in-process planner's {ce['outputs']}")
    for name, ph in (("planner", pl), ("passthrough", pt)):
        if "latency" in ph:
            la = ph["latency"]
            lines.append(f"latency goal -> {'plan' if name == 'planner' else 'copy'} ({name}) at "
                         f"{la['offered_per_s']:.1f}/s offered, {la['count']} goals: p50 {la['p50_ms']:.1f} ms, "
                         f"p99 {la['p99_ms']:.1f} ms, max {la['max_ms']:.1f} ms (until the worker produced it: p50 "
                         f"{la['until_worker_produced']['p50_ms']:.1f}, p99 {la['until_worker_produced']['p99_ms']:.1f}); "
                         f"CPU {la['cpu_ms_per_goal']:.2f} ms/goal"
                         + ("" if la["one_output_per_goal"] and not la["missing"] else "  (NOT one output per goal)"))
    if "rss" in pl:
        s = pl["rss"]
        lines.append(f"planner RSS over {s['goals']} goals ({s['seconds']:.0f} s): first {s['first_mb']:.0f} MB, "
                     f"last {s['last_mb']:.0f} MB, max {s['max_mb']:.0f} MB, last / first {s['last_over_first']:.2f}"
                     + ("  (stopped: over --rss-limit-mb)" if s["aborted_over_limit"] else ""))
    lines.append(f"(worker logs: {r['logs']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--goals", type=int, default=2000, help="timed batch per worker (default 2000)")
    ap.add_argument("--latency-goals", type=int, default=1000, help="paced goals per worker (0: no latency run)")
    ap.add_argument("--rate", type=float, default=100.0, help="offered rate of the latency run, goals/s")
    ap.add_argument("--warmup", type=int, default=50, help="warm-up goals per worker")
    ap.add_argument("--refine", type=float, default=0.0, help="refine budget per goal (0: fast path only)")
    ap.add_argument("--rss", action="store_true", help="then feed the planner --rss-goals goals and sample its RSS")
    ap.add_argument("--rss-goals", type=int, default=100_000)
    ap.add_argument("--rss-limit-mb", type=float, default=4000, help="stop the RSS run past this RSS")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes per phase, one consumer group (default 1; CPU and RSS are summed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    args = ap.parse_args(argv)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    result = run(args, say=say)
    print(json.dumps(json_safe(result)) if args.json else report(result))


if __name__ == "__main__":
    main()
