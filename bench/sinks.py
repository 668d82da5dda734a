"""Sink throughput against raw store writes measured in the same run.

    python -m bench.sinks [--events 200000] [--tasks 10000] [--only clickhouse|neo4j|memory]

ClickHouse: N execution.feedback records go through a real broker and the ClickHouse sink
(consume; the fast path: the Avro bodies framed undecoded, ClickHouse decodes them and its
materialized views write `events` + `feedback` rows, one insert with a dedup token per
batch; commit), timed from the first record consumed; the baseline inserts exactly the
same rows (built beforehand by rows_for) with clickhouse-connect into the same tables (same
chdb engine, same batch size), row- and column-oriented, after an untimed warm-up round,
before the sink runs. Then, for reference, the same records through the sink's Python path
alone (fastavro decode, rows_for, clickhouse-connect inserts). Printed: events/s of each
and the ratios against the raw inserts (goal >= 0.70). The goal is a *sustained* rate, so the
default volume is 40 batches: with a few batches the run is mostly the wait for the age flush
(batch_age_s, 0.5 s) of each of the 4 partitions' last partial batch (30,000 events: ~0.5 s
of a ~0.8 s run), which measures the age setting rather than the sink.

Neo4j: a synthetic history of plans with --tasks tasks in all (chains of 10 with a failure
in some) written with the sink's UNWIND-batched MERGE; printed: graph upserts/s (nodes +
relationships merged per second) and root-cause query latency p50/p99 on that graph (goals
>= 5,000/s and p99 <= 50 ms).

Memory: a synthetic history where four kinds of goal recur (two wordings each), planned by the
real planner and executed with known true durations, stored in Chroma; held-back goals (a
third wording, plus novel goals) are planned by the planner with memory (processors.memory
reuse of the recalled episode) and without; printed: reuse rate and the duration-estimate
errors (per task, total work, makespan) of both, on the same goals (goal: >= 30% lower).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from topics import registry as T  # noqa: E402

T0 = int(time.time() * 1000)


def _feedback(i: int) -> dict:
    return {"event_id": f"bench-{i}", "plan_id": f"plan-{i % 997}", "task_id": f"t{i % 31}",
            "status": "COMPLETED" if i % 5 else "PROGRESS", "progress_pct": 100.0, "actual_hours": 1.5,
            "message": "", "reported_at_ms": T0 + i}


def bench_clickhouse(bootstrap: str, n: int, batch: int = 5000, rounds: int = 3) -> float:
    from confluent_kafka import Producer

    from sinks.base import SinkRecord
    from sinks.clickhouse import COLUMNS, ClickHouseStore, rows_for
    from topics.admin import create_topics
    from topics.serde import serde

    asyncio.run(create_topics(bootstrap))
    s = serde(T.EXECUTION_FEEDBACK.name)
    values = [s.encode(_feedback(i)) for i in range(n)]
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    for i, v in enumerate(values):
        p.produce(T.EXECUTION_FEEDBACK.name, key=f"plan-{i % 997}".encode(), value=v)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(60)

    folder = Path(tempfile.mkdtemp(prefix="bench-ch-"))
    store = ClickHouseStore(folder)
    store.setup()
    # Baseline: the same rows (built beforehand), raw clickhouse-connect inserts, same batch size.
    recs = [SinkRecord(T.EXECUTION_FEEDBACK.name, 0, i, "k", _feedback(i), None, {}, T0) for i in range(n)]
    tables = {t: [] for t in COLUMNS}
    for r in recs:
        for t, rows in rows_for(r).items():
            tables[t].extend(rows)

    # the rows live until the end: out of the collector's sight, as the sink runner freezes what it
    # holds at start (else the raw inserts' first round pays for scanning them and the sink's does not)
    gc.collect()
    gc.freeze()

    def raw(column_oriented: bool) -> float:
        for t in COLUMNS:
            store.client.command(f"TRUNCATE TABLE chimera.{t}")
        t0 = time.perf_counter()
        for t, rows in tables.items():
            for i in range(0, len(rows), batch):
                part = rows[i:i + batch]
                if column_oriented:  # the transpose is part of the raw cost
                    store.client.insert(f"chimera.{t}", list(zip(*part)), column_names=COLUMNS[t],
                                        column_oriented=True)
                else:
                    store.client.insert(f"chimera.{t}", part, column_names=COLUMNS[t])
        return time.perf_counter() - t0

    raw(True)  # warm-up: first inserts into fresh tables
    # Rounds interleave the three (the machine's load and ClickHouse's background merges drift):
    # each round's ratio pairs the sink with the faster raw way of that round; the median counts.
    best = {"rows": float("inf"), "columns": float("inf"), "sink": float("inf")}
    ratios = []
    for r in range(rounds):
        took = {"rows": raw(False), "columns": raw(True),
                "sink": _sink_seconds(bootstrap, store, n, batch, fast=True, group=f"r{r}")}
        stored = store.count("feedback", final=False), store.count("events", final=False)
        assert stored == (n, n), f"stored {stored}, expected {n} feedback and events rows"
        ratios.append(min(took["rows"], took["columns"]) / took["sink"])
        print(f"clickhouse: round {r + 1}: raw rows {n / took['rows']:,.0f}/s, raw columns "
              f"{n / took['columns']:,.0f}/s, sink {n / took['sink']:,.0f}/s: {ratios[-1]:.2f}x the faster raw way")
        best = {k: min(best[k], took[k]) for k in best}
    python_s = _sink_seconds(bootstrap, store, n, batch, fast=False)
    raw_rate, rows_rate, sink_rate = n / best["columns"], n / best["rows"], n / best["sink"]
    median = statistics.median(ratios)
    print(f"clickhouse: {n:,} events, best of {rounds} rounds each: raw clickhouse-connect inserts of the same rows "
          f"{rows_rate:,.0f} events/s row-oriented, {raw_rate:,.0f} events/s column-oriented (2 rows per event, "
          f"2 tables, batches of {batch}); sink {sink_rate:,.0f} events/s (broker -> Avro framed undecoded -> "
          f"ClickHouse decodes, views write both tables, dedup token -> commit): "
          f"{sink_rate / max(rows_rate, raw_rate):.2f}x the best raw round")
    print(f"clickhouse: sink / raw inserts, paired by round: median {median:.2f}x (rounds {min(ratios):.2f}x-"
          f"{max(ratios):.2f}x; goal >= 0.70)")
    print(f"clickhouse: for reference, the sink's Python path alone (fastavro, rows_for, clickhouse-connect): "
          f"{n / python_s:,.0f} events/s = {n / python_s / max(rows_rate, raw_rate):.2f}x the best raw round")
    store.close()
    return median


def _sink_seconds(bootstrap: str, store, n: int, batch: int, fast: bool, group: str = "") -> float:
    """Seconds from the first record consumed until n records are written, by a ClickHouse
    sink in a new consumer group over the same topic, into emptied tables (checked: nothing
    refused to the Python path on the fast path)."""
    from sinks.base import SinkRunner, run_in_thread
    from sinks.clickhouse import COLUMNS, ClickHouseSink

    for t in COLUMNS:
        store.client.command(f"TRUNCATE TABLE chimera.{t}")
    sink = ClickHouseSink(store=store, fast=fast)
    sink.close = lambda: None   # the store stays open for the caller
    runner = SinkRunner(sink, bootstrap, group=f"bench-ch-{'fast' if fast else 'py'}{group}-{os.getpid()}",
                        batch_size=batch, batch_age_s=0.5)
    runner.sink.topics, runner.sink.raw_topics = (T.EXECUTION_FEEDBACK.name,), ()
    thread, stop = run_in_thread(runner)
    runner.ready.wait(60)
    while runner.written < n and thread.is_alive():
        time.sleep(0.002)
    took = time.monotonic() - runner.first_record_at   # group join excluded
    stop.set()
    thread.join(30)
    assert not fast or runner.reprepared == 0, "the fast path refused a batch of ordinary records"
    return took


def bench_neo4j(n_tasks: int, plans_per_tx: int = 250, warmup_tx: int = 2) -> None:
    from infra.neo4j import Neo4jServer
    from sinks.base import SinkRecord
    from sinks.neo4j import Graph, Neo4jSink, rows_for
    from tests import sinks_fixtures as F

    with Neo4jServer() as server:
        sink = Neo4jSink(server.uri)
        sink.setup()
        n_plans = max(n_tasks // 10, 1)
        # plans_per_tx plans (10 tasks each) per batch, one transaction each; the first warmup_tx
        # batches (other plans) warm the JVM and the query plans up and are not timed: a sustained rate
        groups: list[dict] = []
        for k in range(-warmup_tx * plans_per_tx, n_plans):
            if k % plans_per_tx == 0:
                groups.append({})
            tasks = [F.task(f"t{j}", j, 1, deps=[f"t{j - 1}"] if j else []) for j in range(10)]
            plan = F.plan(f"bp-{k}", f"bg-{k}", tasks=tasks)
            recs = [(T.PLANS_CREATED.name, plan)]
            recs += [(T.TASKS_ASSIGNED.name, F.assignment(plan, f"t{j}", f"exec-{j % 7}")) for j in range(10)]
            if k % 4 == 0:
                recs += [(T.EXECUTION_FEEDBACK.name, F.feedback(plan["plan_id"], f"t{j}", "FAILED", message="x"))
                         for j in (3, 4, 5)]
            for i, (topic, v) in enumerate(recs):
                for key, r in rows_for(SinkRecord(topic, 0, i, None, v, None, {}, T0)).items():
                    groups[-1].setdefault(key, []).extend(r)
        for part in groups[:warmup_tx]:
            sink.write_rows(part)
        groups = groups[warmup_tx:]
        upserts = sum(len(v) for g in groups for v in g.values())
        t0 = time.perf_counter()
        for part in groups:
            sink.write_rows(part)
        dt = time.perf_counter() - t0
        sink.close()
        print(f"neo4j: {upserts:,} graph upserts (UNWIND rows: nodes + relationships merged) in {dt:.1f}s = "
              f"{upserts / dt:,.0f}/s (goal >= 5,000/s), {n_tasks:,} tasks, {len(groups)} transactions of "
              f"{plans_per_tx} plans, after {warmup_tx} warm-up transactions")
        g = Graph(server.uri)
        lat = []
        for k in range(0, n_plans, 4):
            t0 = time.perf_counter()
            rc = g.root_cause(f"bp-{k}", "t9")
            lat.append((time.perf_counter() - t0) * 1000)
            assert rc is None or rc["root"] == "t3"
        for _ in range(3):  # warm-up excluded: measure again
            lat = []
            for k in range(0, n_plans, 4):
                t0 = time.perf_counter()
                g.root_cause(f"bp-{k}", "t9")
                lat.append((time.perf_counter() - t0) * 1000)
        lat.sort()
        g.close()
        print(f"neo4j: root-cause query on a {n_tasks + warmup_tx * plans_per_tx * 10:,}-task graph: p50 {lat[len(lat) // 2]:.1f} ms, "
              f"p99 {lat[int(len(lat) * 0.99)]:.1f} ms over {len(lat)} queries (goal p99 <= 50 ms)")


_KINDS = [  # (title wordings, domain, objectives, how much longer than planned this kind of work really takes)
    (["Launch billing API", "Launch the billing API for EU customers", "Ship a billing API v2"], "software",
     ["Design the API", "Implement payments"], 1.4),
    (["Train a churn model", "Train the customer churn model", "Retrain the churn prediction model"], "data_ml",
     ["Collect data", "Train", "Evaluate"], 0.8),
    (["Migrate the database to Postgres", "Move our MySQL database to Postgres", "Postgres database migration"],
     "infrastructure", ["Plan cut-over", "Copy data"], 1.6),
    (["Study why customers churn", "Research the causes of customer churn", "Customer churn research study"],
     "research", ["Interviews", "Analysis"], 1.25),
]
_NOVEL = [("Organise the summer offsite", "events", ["Venue", "Travel"]),
          ("Audit vendor contracts", "legal", ["Collect", "Review"])]


def _true_factor(kind: int, task_id: str) -> float:
    """Each task of a kind of goal has its own true actual/planned ratio (0.7..1.5 x the
    kind's), the same every time that kind of goal recurs (a deterministic hash)."""
    import zlib
    return _KINDS[kind][3] * (0.7 + 0.8 * (zlib.crc32(f"{kind}:{task_id}".encode()) % 1000) / 999)


def bench_memory(history_per_kind: int = 6, repeats: int = 3, seed: int = 7) -> dict:
    """Duration-estimate error of the planner's plans with and without episodic memory.

    A synthetic history: four kinds of goal recur (two wordings each); each is planned by the
    real planner (processors.lifecycle.on_goal), executed with known true durations (a fixed
    per-task truth x +-10% noise per run) and stored through the Chroma sink's Memory (real
    Chroma, MiniLM). Held back: a third wording of each kind and two novel goals, planned
    twice in the same run: with memory (Memory.recall -> the episode JSON the worker gets ->
    processors.memory.reuse -> on_goal) and without. Errors against that run's true
    durations: per task (mean |estimate - true| / true), total work, and makespan (the plan's
    vs the same task network scheduled with the true durations)."""
    import random

    from processors import lifecycle, memory as M
    from processors.config import PlanningConfig
    from processors.model import Goal, TaskSpec
    from processors.planner import plan_goal
    from sinks.chroma import Memory
    from streams import codec
    from streams.memory import episode_from_json
    from streams.settings import MemorySettings

    rng = random.Random(seed)
    config = PlanningConfig(refine_budget_seconds=0)
    settings = MemorySettings()
    policy = M.ReusePolicy(threshold=settings.threshold, min_factor=settings.min_factor,
                           max_factor=settings.max_factor)
    mem = Memory(tempfile.mkdtemp(prefix="bench-chroma-")).open()

    def goal(gid, title, domain, objectives):
        return Goal(gid, title, created_at_ms=T0, domain=domain, objectives=tuple(objectives))

    def plan(g, reuse=None):
        _, events = lifecycle.on_goal(None, g, {}, config, received_at_ms=T0, reuse=reuse)
        return events[0].plan

    def truth(kind, p):  # this run's true hours per task
        return {st.task.task_id: st.task.duration_hours * _true_factor(kind, st.task.task_id) * rng.uniform(0.9, 1.1)
                for st in p.tasks}

    goals, plans, feedback = [], [], []
    for k, (titles, domain, objectives, _) in enumerate(_KINDS):
        for j in range(history_per_kind):
            g = goal(f"h{k}-{j}", titles[j % 2], domain, objectives)  # history: the first two wordings
            p = plan(g)
            goals.append(codec.goal_record(g))
            plans.append(codec.plan_record(p))
            for tid, hours in truth(k, p).items():
                feedback.append({"event_id": f"fb-{p.plan_id}-{tid}", "plan_id": p.plan_id, "task_id": tid,
                                 "status": "COMPLETED", "progress_pct": 100.0, "actual_hours": hours, "message": "",
                                 "reported_at_ms": T0 + 1000, "attempt": 1})
    t0 = time.perf_counter()
    mem.apply(goals, plans, feedback)
    load_s = time.perf_counter() - t0

    def errors(p, true: dict[str, float]) -> tuple[float, float, float]:
        est = {st.task.task_id: st.task.duration_hours for st in p.tasks}
        per_task = sum(abs(est[t] - true[t]) / true[t] for t in est) / len(est)
        work = abs(sum(est.values()) - sum(true[t] for t in est)) / sum(true[t] for t in est)
        real = Goal("truth", "truth", created_at_ms=T0, tasks=tuple(
            TaskSpec(st.task.task_id, st.task.name, true[st.task.task_id], st.task.depends_on, dict(st.task.resources))
            for st in p.tasks))
        true_makespan = plan_goal(real, config=config)[0].makespan_hours
        return per_task, work, abs(p.makespan_hours - true_makespan) / true_makespan

    rows, held, reused, look = [], 0, 0, []
    cases = [(k, titles[2], domain, objectives) for k, (titles, domain, objectives, _) in enumerate(_KINDS)]
    cases += [(None, t, d, o) for t, d, o in _NOVEL]
    for i in range(repeats):
        for k, title, domain, objectives in cases:
            g = goal(f"new-{i}-{title}", title, domain, objectives)
            t1 = time.perf_counter()
            hit = mem.recall(codec.goal_record(g), threshold=policy.threshold)
            look.append((time.perf_counter() - t1) * 1000)
            held += 1
            reuse = M.reuse(g, episode_from_json(hit.episode()) if hit else None, policy)
            if reuse is None:
                continue
            reused += 1
            without = plan(g)
            with_memory = plan(g, reuse)
            assert with_memory.memory is not None and without.memory is None
            true = truth(k, without) if k is not None else {}
            # the memory plan's tasks are the same template tasks (recurring kind): same truth per task
            rows.append((errors(without, true), errors(with_memory, true)))
    look.sort()
    n = max(len(rows), 1)
    base = [sum(r[0][m] for r in rows) / n for m in range(3)]
    withm = [sum(r[1][m] for r in rows) / n for m in range(3)]
    out = {"reuse_rate": reused / held, "base": base, "memory": withm}
    print(f"memory: {len(goals)} past episodes (planned by the planner, executed with known true durations) "
          f"stored in {load_s:.1f}s; {held} held-back goals, reuse rate {reused / held:.0%} "
          f"(threshold {policy.threshold}; the {len(_NOVEL) * repeats} novel goals must not reuse)")
    for m, name in enumerate(("per-task duration error", "total work error", "makespan error")):
        print(f"memory: {name}: {withm[m]:.1%} with memory vs {base[m]:.1%} without on the same {len(rows)} "
              f"goals: {1 - withm[m] / base[m]:.0%} lower (goal >= 30%)")
    print(f"memory: look-up median {look[len(look) // 2]:.0f} ms (in process; the worker asks the sink's endpoint)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3, help="ClickHouse: raw rows, raw columns and the sink take turns")
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--plans-per-tx", type=int, default=250, help="Neo4j: plans (10 tasks each) per transaction")
    ap.add_argument("--only", choices=["clickhouse", "neo4j", "memory"])
    a = ap.parse_args()
    from streams.services import broker

    if a.only in (None, "clickhouse"):
        with broker() as bootstrap:
            bench_clickhouse(bootstrap, a.events, rounds=a.rounds)
    if a.only in (None, "neo4j"):
        bench_neo4j(a.tasks, a.plans_per_tx)
    if a.only in (None, "memory"):
        bench_memory()


if __name__ == "__main__":
    main()
