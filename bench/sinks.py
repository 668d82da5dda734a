"""Sink throughput against raw store writes measured in the same run.

    python -m bench.sinks [--events 50000] [--tasks 10000] [--only clickhouse|neo4j|memory]

ClickHouse: N execution.feedback records go through a real broker and the ClickHouse sink
(consume, Avro decode, rows for `events` + `feedback`, insert with dedup tokens, commit);
the baseline inserts exactly the same rows with clickhouse-connect into the same tables
(same chdb engine, same batch size), before the sink runs. Printed: events/s of each and
the ratio (goal >= 0.70).

Neo4j: a synthetic history of plans with --tasks tasks in all (chains of 10 with a failure
in some) written with the sink's UNWIND-batched MERGE; printed: graph upserts/s (nodes +
relationships merged per second) and root-cause query latency p50/p99 on that graph (goals
>= 5,000/s and p99 <= 50 ms).

Memory: a synthetic history where four kinds of goal recur (two wordings each) and take a
known factor of their planned hours; held-back goals (a third wording, plus novel goals)
are estimated with and without `Memory.recall`; printed: reuse rate and the mean relative
duration error of the plans that reused memory, with and without it (goal: >= 30% lower).
"""
from __future__ import annotations

import argparse
import asyncio
import os
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


def bench_clickhouse(bootstrap: str, n: int, batch: int = 5000) -> float:
    from confluent_kafka import Producer

    from sinks.base import SinkRecord, SinkRunner, run_in_thread
    from sinks.clickhouse import COLUMNS, ClickHouseSink, ClickHouseStore, rows_for
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
    t0 = time.perf_counter()
    for t, rows in tables.items():
        for i in range(0, len(rows), batch):
            store.client.insert(f"chimera.{t}", rows[i:i + batch], column_names=COLUMNS[t])
    raw_s = time.perf_counter() - t0
    for t in COLUMNS:
        store.client.command(f"TRUNCATE TABLE chimera.{t}")

    sink = ClickHouseSink(store=store)
    runner = SinkRunner(sink, bootstrap, group=f"bench-ch-{os.getpid()}", batch_size=batch, batch_age_s=0.5)
    runner.sink.topics = (T.EXECUTION_FEEDBACK.name,)
    runner.sink.raw_topics = ()
    thread, stop = run_in_thread(runner)
    runner.ready.wait(60)
    while runner.written < n and thread.is_alive():
        time.sleep(0.002)
    sink_s = time.monotonic() - runner.first_record_at  # from the first record consumed (group join excluded)
    stop.set()
    thread.join(30)
    raw_rate, sink_rate = n / raw_s, n / sink_s
    print(f"clickhouse: raw inserts {raw_rate:,.0f} events/s ({2 * n / raw_s:,.0f} rows/s, 2 tables); "
          f"sink {sink_rate:,.0f} events/s (broker -> decode -> rows -> insert -> commit, one core); "
          f"ratio {sink_rate / raw_rate:.2f} (goal >= 0.70)")
    return sink_rate / raw_rate


def bench_neo4j(n_tasks: int) -> None:
    from infra.neo4j import Neo4jServer
    from sinks.base import SinkRecord
    from sinks.neo4j import Graph, Neo4jSink, rows_for
    from tests import sinks_fixtures as F

    with Neo4jServer() as server:
        sink = Neo4jSink(server.uri)
        sink.setup()
        n_plans = max(n_tasks // 10, 1)
        groups: list[dict] = []  # 100 plans (1,000 tasks) per batch, one transaction each
        for k in range(n_plans):
            if k % 100 == 0:
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
        upserts = sum(len(v) for g in groups for v in g.values())
        t0 = time.perf_counter()
        for part in groups:
            sink.write_rows(part)
        dt = time.perf_counter() - t0
        sink.close()
        print(f"neo4j: {upserts:,} graph upserts (nodes + relationships merged) in {dt:.1f}s = "
              f"{upserts / dt:,.0f}/s (goal >= 5,000/s), {n_tasks:,} tasks")
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
        print(f"neo4j: root-cause query on a {n_tasks:,}-task graph: p50 {lat[len(lat) // 2]:.1f} ms, "
              f"p99 {lat[int(len(lat) * 0.99)]:.1f} ms over {len(lat)} queries (goal p99 <= 50 ms)")


_KINDS = [  # (title variants, domain, objectives, true actual/planned factor)
    (["Launch billing API", "Launch the billing API for EU customers", "Ship a billing API v2"], "software",
     ["Design the API", "Implement payments"], 1.4),
    (["Train a churn model", "Train the customer churn model", "Retrain churn prediction model"], "ml",
     ["Collect data", "Train", "Evaluate"], 0.8),
    (["Migrate the database to Postgres", "Move our MySQL database to Postgres", "Postgres migration"],
     "infrastructure", ["Plan cut-over", "Copy data"], 1.6),
    (["Write the onboarding handbook", "Write an onboarding guide for new hires", "New-hire handbook"],
     "documentation", ["Outline", "Draft", "Review"], 1.25),
]
_NOVEL = [("Organise the summer offsite", "events", ["Venue", "Travel"]),
          ("Audit vendor contracts", "legal", ["Collect", "Review"])]


def bench_memory(history_per_kind: int = 8, seed: int = 7) -> None:
    """Duration-estimate error of plans that reuse memory vs the same plans without it (held-back goals)."""
    import random

    from sinks.chroma import Memory
    from tests import sinks_fixtures as F

    rng = random.Random(seed)
    mem = Memory(tempfile.mkdtemp(prefix="bench-chroma-")).open()

    def make(gid, title, domain, objectives):
        hours = [rng.choice([4.0, 8.0, 12.0, 16.0]) for _ in objectives]
        tasks, start = [], 0.0
        for i, h in enumerate(hours):
            tasks.append(F.task(f"t{i}", start, h))
            start += h
        return F.goal(gid, title=title, domain=domain, objectives=objectives), F.plan(f"p-{gid}", gid, tasks=tasks)

    goals, plans, feedback = [], [], []
    for k, (titles, domain, objectives, factor) in enumerate(_KINDS):
        for j in range(history_per_kind):
            g, p = make(f"h{k}-{j}", titles[j % 2], domain, objectives)  # history uses the first two wordings
            goals.append(g)
            plans.append(p)
            for t in p["tasks"]:
                actual = t["estimate"]["most_likely"] * factor * rng.uniform(0.9, 1.1)
                feedback.append({**F.feedback(p["plan_id"], t["task_id"], "COMPLETED", actual), "attempt": None})
    t0 = time.perf_counter()
    mem.apply(goals, plans, feedback)
    load_s = time.perf_counter() - t0

    base_err, mem_err, reused, held, look = [], [], 0, 0, []
    cases = [(titles[2], domain, objectives, factor) for titles, domain, objectives, factor in _KINDS]
    cases += [(t, d, o, 1.2) for t, d, o in _NOVEL]
    for i in range(3):
        for title, domain, objectives, factor in cases:
            g, p = make(f"new-{i}-{title}", title, domain, objectives)
            planned = sum(t["estimate"]["most_likely"] for t in p["tasks"])
            true = planned * factor * rng.uniform(0.9, 1.1)
            t1 = time.perf_counter()
            hit = mem.recall(g, threshold=0.6)
            look.append((time.perf_counter() - t1) * 1000)
            held += 1
            if hit is not None:
                reused += 1
                base_err.append(abs(planned - true) / true)
                mem_err.append(abs(planned * hit.duration_factor - true) / true)
    look.sort()
    lookup_ms = look[len(look) // 2]
    b, m = sum(base_err) / max(len(base_err), 1), sum(mem_err) / max(len(mem_err), 1)
    print(f"memory: {len(goals)} past episodes stored in {load_s:.1f}s; {held} held-back goals, reuse rate "
          f"{reused / held:.0%}; on the {reused} that reused memory the duration error is {m:.1%} vs {b:.1%} "
          f"without it: {1 - m / b:.0%} lower (goal >= 30%); look-up median {lookup_ms:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--only", choices=["clickhouse", "neo4j", "memory"])
    a = ap.parse_args()
    from streams.services import broker

    if a.only in (None, "clickhouse"):
        with broker() as bootstrap:
            bench_clickhouse(bootstrap, a.events)
    if a.only in (None, "neo4j"):
        bench_neo4j(a.tasks)
    if a.only in (None, "memory"):
        bench_memory()


if __name__ == "__main__":
    main()
