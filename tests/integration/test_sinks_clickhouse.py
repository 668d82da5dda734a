"""ClickHouse sink on a real broker and chdb (ClickHouse's engine in process)."""
from __future__ import annotations

import asyncio

import pytest

from tests import sinks_fixtures as F
from topics import registry as T

pytestmark = [pytest.mark.integration]


def _counts(store, prefix: str) -> dict:
    like = {"p": f"{prefix}-%"}
    q = {
        "goals": "SELECT count() FROM chimera.goals FINAL WHERE goal_id LIKE {p:String}",
        "plans": "SELECT count() FROM chimera.plans FINAL WHERE plan_id LIKE {p:String}",
        "tasks": "SELECT count() FROM chimera.tasks FINAL WHERE plan_id LIKE {p:String}",
        "allocations": "SELECT count() FROM chimera.allocations FINAL WHERE plan_id LIKE {p:String}",
        "risks": "SELECT count() FROM chimera.risks FINAL WHERE plan_id LIKE {p:String}",
        "assignments": "SELECT count() FROM chimera.assignments FINAL WHERE plan_id LIKE {p:String}",
        "feedback": "SELECT count() FROM chimera.feedback FINAL WHERE plan_id LIKE {p:String}",
        "resources": "SELECT count() FROM chimera.resources FINAL WHERE resource_id LIKE {p:String}",
        "events": "SELECT count() FROM chimera.events FINAL WHERE key LIKE {p:String}",
        "dead": "SELECT count() FROM chimera.dead_letters FINAL WHERE source_topic = 'plans.created' "
                "AND sink = 'clickhouse' AND dlq_topic != {p:String}",
    }
    return {k: store.query(sql, like)[1][0][0] for k, sql in q.items()}


EXPECTED = {"goals": 2, "plans": 3, "tasks": 5, "allocations": 5, "risks": 2, "assignments": 1, "feedback": 1,
            "resources": 1, "events": 10}


def test_clickhouse_sink_stores_dlqs_and_replays_idempotently(kafka_bootstrap, tmp_path, withdraw):
    from sinks.base import SinkRunner
    from sinks.clickhouse import ClickHouseSink, reader
    from topics.admin import create_topics

    asyncio.run(create_topics(kafka_bootstrap))
    prefix = F.unique("ch")
    withdraw.append(F.sample_resource(prefix))
    for topic, pairs in F.sample_records(prefix).items():
        F.produce_raw(kafka_bootstrap, topic, pairs)
    F.produce_raw(kafka_bootstrap, T.PLANS_CREATED.name, [(f"{prefix}-poison", b"{not avro}")])

    group = F.unique("chimera-sink-clickhouse-test")
    sink = ClickHouseSink(tmp_path / "ch")
    runner = SinkRunner(sink, kafka_bootstrap, group=group, batch_age_s=0.2)
    with F.running(runner):
        counts = F.wait_until(lambda: (c := _counts(sink.store, prefix))["events"] >= 10 and c,
                              what="rows in ClickHouse")
        F.wait_until(lambda: sink.store.query(
            "SELECT count() FROM chimera.dead_letters FINAL WHERE sink = 'clickhouse' AND source_topic = 'plans.created'"
            " AND reason = 'not_avro'")[1][0][0] >= 1, what="the poison record in dead_letters (via the DLQ)")
    store = reader(tmp_path / "ch")  # the sink stopped: nobody owns the folder, chdb opens it here
    counts = _counts(store, prefix)
    assert {k: counts[k] for k in EXPECTED} == EXPECTED
    assert runner.dead_letters >= 1
    from prometheus_client import REGISTRY
    assert REGISTRY.get_sample_value("chimera_sink_records_total",
                                     {"sink": "clickhouse", "topic": "plans.created"}) >= 2
    assert REGISTRY.get_sample_value("chimera_sink_batch_size_count", {"sink": "clickhouse"}) >= 1
    assert REGISTRY.get_sample_value("chimera_sink_write_seconds_count", {"sink": "clickhouse"}) >= 1
    assert REGISTRY.get_sample_value("chimera_sink_lag", {"sink": "clickhouse", "topic": "plans.created",
                                                          "partition": "0"}) is not None or any(
        m.name == "chimera_sink_lag" and m.samples for m in REGISTRY.collect())
    # the plan's latest version is the refined one
    _, rows = store.query("SELECT argMax(makespan_hours, plan_version) FROM chimera.plans FINAL "
                               "WHERE plan_id = {p:String}", {"p": f"{prefix}-p1"})
    assert rows == [(25.0,)]
    store.close()
    dead = [r for r in F.read_dlq(kafka_bootstrap) if r["key"] == f"{prefix}-poison"]
    assert dead and dead[0]["headers"]["chimera.dlq.reason"] == "not_avro"
    assert dead[0]["headers"]["chimera.dlq.sink"] == "clickhouse"
    assert dead[0]["headers"]["chimera.source.topic"] == "plans.created"

    # Replay: forget the group's offsets and read everything again into the same folder.
    F.reset_group(kafka_bootstrap, group, runner.sink.topics)
    sink2 = ClickHouseSink(tmp_path / "ch")
    runner2 = SinkRunner(sink2, kafka_bootstrap, group=group, batch_age_s=0.2)
    with F.running(runner2):
        F.wait_until(lambda: runner2.committed.get((T.PLANS_CREATED.name, 0)) is not None
                     or len(runner2.committed) >= 3, what="the replay to commit")
        F.wait_until(lambda: sum(n for (t, _), n in runner2.committed.items()) >= sum(
            n for (t, _), n in runner.committed.items()), what="the replay to reach the first run's offsets")
    store = reader(tmp_path / "ch")
    again = _counts(store, prefix)
    store.close()
    assert {k: again[k] for k in EXPECTED} == EXPECTED
    assert again["dead"] == counts["dead"]


def test_store_down_pauses_retries_and_commits_nothing_until_written(kafka_bootstrap, tmp_path, withdraw):
    """While writes fail the sink pauses, retries with backoff and commits no offset; once the
    store is back every record lands and offsets move."""
    from sinks.base import SinkRunner
    from sinks.clickhouse import ClickHouseSink, reader

    class Flaky(ClickHouseSink):
        down = True

        def write(self, batch):
            if self.down:
                raise ConnectionError("store down (test)")
            super().write(batch)

    prefix = F.unique("chdown")
    withdraw.append(F.sample_resource(prefix))
    for topic, pairs in F.sample_records(prefix).items():
        F.produce_raw(kafka_bootstrap, topic, pairs)
    sink = Flaky(tmp_path / "ch")
    runner = SinkRunner(sink, kafka_bootstrap, group=F.unique("chimera-sink-ch-down"), batch_age_s=0.1,
                        backoff_s=(0.1, 0.4))
    with F.running(runner):
        F.wait_until(lambda: runner.retries >= 4, what="retries while the store is down")
        assert runner.paused and runner.committed == {}
        # what the sinks' /readyz says (sinks/service.py): not ready, and why
        assert runner.not_ready() == "paused, waiting for its store (ConnectionError: store down (test))"
        assert _counts(sink.store, prefix)["events"] == 0
        sink.down = False
        F.wait_until(lambda: _counts(sink.store, prefix)["events"] >= 9, what="rows after the store came back")
        F.wait_until(lambda: not runner.paused, what="the sink to resume")
        assert runner.committed and runner.not_ready() is None
    store = reader(tmp_path / "ch")
    counts = _counts(store, prefix)
    store.close()
    assert {k: counts[k] for k in EXPECTED} == {**EXPECTED, "events": 9}  # no poison record here


def test_cli_sink_process_owns_chdb_and_serves_readers(kafka_bootstrap, tmp_path, withdraw):
    """`chimera sink clickhouse` in its own process; another process reads through it while it writes."""
    import os
    import signal
    import subprocess
    import sys

    from sinks import analytics
    from sinks.clickhouse import RemoteReader, reader
    from tests.kafka_helpers import free_port
    from tests.probe_helpers import probe, wait_probe

    prefix = F.unique("chcli")
    withdraw.append(F.sample_resource(prefix))
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "CHIMERA_METRICS_PORT": str(port)}
    log = (tmp_path / "sink.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "sink", "clickhouse", "--data-dir",
                             str(tmp_path / "data")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        marker = tmp_path / "data" / "clickhouse" / "reader.json"
        F.wait_until(marker.exists, timeout=90, what="the sink's read endpoint")
        # the probes infra/k8s/sinks.yaml asks, on the /metrics port: ready once the store is set
        # up and its consumer subscribed
        ready = wait_probe(port, "/readyz", lambda r: r[0] == 200, timeout=30)
        assert ready == (200, {"status": "ready", "components": ["sinks"], "reasons": []}), ready
        assert probe(port, "/healthz")[0] == 200
        for topic, pairs in F.sample_records(prefix).items():
            F.produce_raw(kafka_bootstrap, topic, pairs)
        r = reader(tmp_path / "data" / "clickhouse")
        assert isinstance(r, RemoteReader)  # the folder is owned: reads go through the owner
        F.wait_until(lambda: _counts(r, prefix)["events"] >= 9, what="rows visible to another process")
        rows = analytics.run_dicts(r, "schedule_budget_variance")
        assert {x["plan_id"] for x in rows} >= {f"{prefix}-p1", f"{prefix}-p2"}
        assert probe(port, "/readyz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    assert proc.returncode == 0, (tmp_path / "sink.log").read_text()[-3000:]
    assert not marker.exists()
    store = reader(tmp_path / "data" / "clickhouse")  # nobody owns it now: opened directly
    try:
        assert not isinstance(store, RemoteReader)
        counts = _counts(store, prefix)
        assert {k: counts[k] for k in EXPECTED} == {**EXPECTED, "events": 9}
    finally:
        store.close()


def test_a_record_the_store_refuses_is_isolated_and_dead_lettered(kafka_bootstrap, tmp_path, withdraw):
    """A write the store refuses for its content (not 'store down') is split until the refused
    record is alone; it goes to the DLQ as store_rejected, the rest of the batch is written."""
    from sinks.base import SinkRunner
    from sinks.clickhouse import ClickHouseSink, reader

    prefix = F.unique("chrej")
    withdraw.append(F.sample_resource(prefix))
    bad_goal = f"{prefix}-g2"

    class Picky(ClickHouseSink):
        def write(self, batch):
            if any(r.topic == T.GOALS_CREATED.name and r.value["goal_id"] == bad_goal for r in batch.records):
                raise ValueError("refused (test)")
            super().write(batch)

    for topic, pairs in F.sample_records(prefix).items():
        F.produce_raw(kafka_bootstrap, topic, pairs)
    sink = Picky(tmp_path / "ch")
    runner = SinkRunner(sink, kafka_bootstrap, group=F.unique("chimera-sink-ch-rej"), batch_age_s=0.3)
    with F.running(runner):
        F.wait_until(lambda: _counts(sink.store, prefix)["plans"] >= 3 and runner.dead_letters >= 1
                     and not runner.batches, what="the batch written but the refused record")
    store = reader(tmp_path / "ch")
    counts = _counts(store, prefix)
    store.close()
    assert counts["goals"] == 1 and counts["plans"] == 3 and not runner.paused
    dead = [r for r in F.read_dlq(kafka_bootstrap) if r["key"] == bad_goal]
    assert dead and dead[0]["headers"]["chimera.dlq.reason"] == "store_rejected"
    assert "refused (test)" in dead[0]["headers"]["chimera.dlq.detail"]


def test_events_keep_the_trace_id_of_their_traceparent(kafka_bootstrap, tmp_path):
    """The trace that carried a goal (its traceparent header) is on its rows in ClickHouse, so
    an event is found by trace id as in the workers' logs; a record without one has ""."""
    from confluent_kafka import Producer

    from sinks.base import SinkRunner
    from sinks.clickhouse import ClickHouseSink
    from topics import tracing
    from topics.admin import create_topics
    from topics.serde import serde

    asyncio.run(create_topics(kafka_bootstrap))
    prefix = F.unique("trace")
    (traced_key, traced), (plain_key, plain) = F.sample_records(prefix)[T.GOALS_CREATED.name]
    carrier, trace_id = tracing.outgoing(None, "test.goal")
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    s = serde(T.GOALS_CREATED.name)
    p.produce(T.GOALS_CREATED.name, key=traced_key.encode(), value=s.encode(traced),
              headers=[(k, v.encode()) for k, v in carrier.items()])
    p.produce(T.GOALS_CREATED.name, key=plain_key.encode(), value=s.encode(plain))
    assert p.flush(30) == 0
    sink = ClickHouseSink(tmp_path / "ch")
    runner = SinkRunner(sink, kafka_bootstrap, group=F.unique("chimera-sink-trace-test"), batch_age_s=0.2)
    sql = "SELECT key, trace_id FROM chimera.events FINAL WHERE key IN {k:Array(String)}"
    with F.running(runner):
        F.wait_until(lambda: len(sink.store.query(sql, {"k": [traced_key, plain_key]})[1]) == 2,
                     what="both goals' events")
        rows = dict(sink.store.query(sql, {"k": [traced_key, plain_key]})[1])
    assert len(trace_id) == 32 and rows == {traced_key: trace_id, plain_key: ""}


def test_lag_is_zero_when_only_transaction_markers_are_left(kafka_bootstrap, tmp_path):
    """The executors write feedback in transactions: their partitions end in commit markers, which
    no consumer receives. Once the sink stored the last record, its lag gauge says 0 (it said 1
    for ever, an offset it could never read)."""
    from confluent_kafka import Producer
    from prometheus_client import REGISTRY
    from sinks.base import SinkRunner
    from sinks.clickhouse import ClickHouseSink
    from topics.admin import create_topics
    from topics.serde import serde

    asyncio.run(create_topics(kafka_bootstrap))
    prefix = F.unique("chlag")
    rec = F.feedback(f"{prefix}-p", "t1", "COMPLETED", 2.0)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": prefix, "partitioner": "murmur2_random"})
    where: list = []
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(T.EXECUTION_FEEDBACK.name, key=rec["plan_id"].encode(), value=serde(T.EXECUTION_FEEDBACK.name).encode(rec),
              on_delivery=lambda err, msg: where.append(msg.partition()))
    p.commit_transaction(30)
    assert where, "the transactional record was delivered"
    sink = ClickHouseSink(tmp_path / "ch")
    runner = SinkRunner(sink, kafka_bootstrap, group=F.unique("chimera-sink-ch-lag"), batch_age_s=0.1)
    labels = {"sink": "clickhouse", "topic": T.EXECUTION_FEEDBACK.name, "partition": str(where[0])}
    with F.running(runner):
        F.wait_until(lambda: sink.store.query("SELECT count() FROM chimera.feedback FINAL WHERE plan_id = {p:String}",
                                              {"p": rec["plan_id"]})[1][0][0] == 1, what="the record stored")
        F.wait_until(lambda: REGISTRY.get_sample_value("chimera_sink_lag", labels) == 0, timeout=20,
                     what="the sink's lag gauge at 0 on a partition ending in a commit marker")
