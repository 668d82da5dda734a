"""Neo4j sink against a real Neo4j Community (started by infra/neo4j) and a real broker."""
from __future__ import annotations

import pytest

from tests import sinks_fixtures as F
from topics import registry as T

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def neo4j_server(tmp_path_factory):
    """A real Neo4j on a free loopback port (a container where a Docker engine answers), its data
    kept across stop/start in the module."""
    from infra import containers

    server = containers.neo4j(data_dir=tmp_path_factory.mktemp("neo4j"))
    server.start()
    yield server
    server.close()


def _counts(graph, prefix: str) -> dict:
    p = {"p": prefix}
    nodes = {label: graph.count(f"MATCH (n:{label}) WHERE n.id STARTS WITH $p RETURN count(n) AS n", **p)
             for label in ("Goal", "Plan", "Task", "Risk", "Resource")}
    rels = {rel: graph.count(f"MATCH (a)-[r:{rel}]->(b) WHERE a.id STARTS WITH $p RETURN count(r) AS n", **p)
            for rel in ("HAS_PLAN", "HAS_TASK", "DEPENDS_ON", "ALLOCATED_TO", "THREATENS", "REPLANNED_AS",
                        "EXECUTED_BY")}
    return {**nodes, **rels}


# sample_records(): goals g1, g2; p1 v1 (t1, t2 -> t1, risk r1 on no task: threatens v1 and v2) refined
# as v2; p2 (task a); a resource
EXPECTED = {"Goal": 2, "Plan": 3, "Task": 3, "Risk": 1, "Resource": 1, "HAS_PLAN": 3, "HAS_TASK": 5,
            "DEPENDS_ON": 1, "ALLOCATED_TO": 3, "THREATENS": 2, "REPLANNED_AS": 1, "EXECUTED_BY": 1}


def test_neo4j_sink_stores_replays_idempotently_and_survives_an_outage(kafka_bootstrap, neo4j_server, withdraw):
    from sinks.base import SinkRunner
    from sinks.neo4j import Graph, Neo4jSink

    prefix = F.unique("neo")
    withdraw.append(F.sample_resource(prefix))
    for topic, pairs in F.sample_records(prefix).items():
        F.produce_raw(kafka_bootstrap, topic, pairs)
    F.produce_raw(kafka_bootstrap, T.TASKS_ASSIGNED.name, [(f"{prefix}-poison", b"{not avro}")])
    group = F.unique("chimera-sink-neo4j-test")
    graph = Graph(neo4j_server.uri)
    try:
        runner = SinkRunner(Neo4jSink(neo4j_server.uri), kafka_bootstrap, group=group, batch_age_s=0.2,
                            backoff_s=(0.2, 2.0))
        with F.running(runner):
            seen = []
            F.wait_until(lambda: seen.append(_counts(graph, prefix)) or seen[-1] == EXPECTED,
                         what=lambda: f"the graph: {seen[-1]}")
            F.wait_until(lambda: runner.dead_letters >= 1, what="the poison record")
        assert _counts(graph, prefix) == EXPECTED
        dead = [r for r in F.read_dlq(kafka_bootstrap) if r["key"] == f"{prefix}-poison"]
        assert dead and dead[0]["headers"]["chimera.dlq.reason"] == "not_avro"
        assert dead[0]["headers"]["chimera.dlq.sink"] == "neo4j"

        # Replay from the start: nothing changes.
        F.reset_group(kafka_bootstrap, group, runner.sink.topics)
        replay = SinkRunner(Neo4jSink(neo4j_server.uri), kafka_bootstrap, group=group, batch_age_s=0.2)
        with F.running(replay):
            F.wait_until(lambda: sum(replay.committed.values()) >= sum(runner.committed.values()),
                         what="the replay to catch up")
        assert _counts(graph, prefix) == EXPECTED

        # Outage: kill Neo4j while the sink runs, produce more, restart it on the same folder.
        later = F.unique("neo-later")
        withdraw.append(F.sample_resource(later))
        sink = SinkRunner(Neo4jSink(neo4j_server.uri), kafka_bootstrap, group=group, batch_age_s=0.2,
                          backoff_s=(0.2, 1.0))
        with F.running(sink):
            neo4j_server.kill()
            for topic, pairs in F.sample_records(later).items():
                F.produce_raw(kafka_bootstrap, topic, pairs)
            F.wait_until(lambda: sink.retries >= 2 and sink.paused, what="the sink to pause and retry")
            committed = dict(sink.committed)
            F.wait_until(lambda: sink.retries >= 4, what="more retries")
            assert sink.committed == committed, "offsets moved while Neo4j was down"
            neo4j_server.start()
            graph.close()
            graph = Graph(neo4j_server.uri)
            F.wait_until(lambda: _counts(graph, later) == EXPECTED, timeout=90, what="catch-up after the outage")
        assert _counts(graph, prefix) == EXPECTED
    finally:
        graph.close()


def test_graph_queries_known_answers(neo4j_server):
    """Root cause, decision impact and capability discovery on a graph with known answers."""
    from sinks.base import SinkRecord
    from sinks.neo4j import Graph, Neo4jSink, rows_for

    if not neo4j_server.running:
        neo4j_server.start()
    x = F.unique("q")
    tasks = [F.task("a", 0, 10, caps=["python"]), F.task("b", 10, 10, deps=["a"], caps=["python"]),
             F.task("c", 20, 10, deps=["b"], caps=["python"]), F.task("d", 0, 5, caps=["docs"])]
    p = F.plan(f"{x}-P", f"{x}-G", tasks=tasks)
    v2_tasks = [F.task("a", 0, 10), F.task("b", 12, 10, deps=["a"]), F.task("c", 22, 10, deps=["b"]),
                F.task("e", 0, 3)]
    up = F.plan_update({**p, "tasks": v2_tasks}, version=2, makespan=32.0)
    up["previous_makespan_hours"] = 30.0
    q = F.plan(f"{x}-Q", f"{x}-G", tasks=[F.task("x", 0, 1, caps=["gpu"]), F.task("y", 1, 1, caps=["gpu"])])
    e1, e2 = f"{x}-exec-1", f"{x}-exec-2"
    recs = [(T.PLANS_CREATED.name, p), (T.PLANS_UPDATED.name, up), (T.PLANS_CREATED.name, q)]
    recs += [(T.TASKS_ASSIGNED.name, F.assignment(p, t, e)) for t, e in (("a", e1), ("b", e2), ("c", e2))]
    recs += [(T.TASKS_ASSIGNED.name, F.assignment(q, t, e1)) for t in ("x", "y")]
    recs += [(T.EXECUTION_FEEDBACK.name, F.feedback(p["plan_id"], "a", "STARTED", at_ms=F.T0 + 10)),
             (T.EXECUTION_FEEDBACK.name, F.feedback(p["plan_id"], "a", "FAILED", 2.0, message="disk full")),
             (T.EXECUTION_FEEDBACK.name, F.feedback(p["plan_id"], "b", "FAILED", message="input missing")),
             (T.EXECUTION_FEEDBACK.name, F.feedback(p["plan_id"], "c", "FAILED", message="input missing")),
             (T.EXECUTION_FEEDBACK.name, F.feedback(q["plan_id"], "x", "COMPLETED", 1.0)),
             (T.EXECUTION_FEEDBACK.name, F.feedback(q["plan_id"], "y", "COMPLETED", 1.0))]
    sink = Neo4jSink(neo4j_server.uri)
    sink.setup()
    rows: dict = {}
    for i, (topic, v) in enumerate(recs):
        for k, r in rows_for(SinkRecord(topic, 0, i, None, F.check(topic, v), None, {}, F.T0)).items():
            rows.setdefault(k, []).extend(r)
    sink.write_rows(rows)
    sink.close()
    g = Graph(neo4j_server.uri)
    try:
        rc = g.root_cause(p["plan_id"], "c")
        assert rc == {"path": ["c", "b", "a"], "root": "a", "executor": e1, "resources": ["engineer"],
                      "reasons": ["disk full"]}
        impact = g.decision_impact(p["plan_id"], 1)
        assert (impact["before"], impact["after"], impact["makespan_before"], impact["makespan_after"]) == (
            1, 2, 30.0, 32.0)
        assert [m["task"] for m in impact["moved"]] == ["b", "c"]
        assert impact["moved"][0]["shift"] == 2.0
        assert impact["added"] == ["e"] and impact["removed"] == ["d"]
        caps = [(c["executor"], c["kind"], c["tasks"], c["succeeded"]) for c in g.capabilities()
                if c["executor"] in (e1, e2)]
        assert caps == [(e1, "gpu", 2, 2), (e2, "python", 2, 0), (e1, "python", 1, 0)]  # best first
    finally:
        g.close()


def test_a_sink_process_without_its_store_is_live_but_not_ready_with_the_reason(kafka_bootstrap, tmp_path):
    """`chimera sink neo4j` with NEO4J_URI where nothing listens: its probes (infra/k8s/sinks.yaml)
    say live (a restart would not bring the store back) and not ready, naming the store's error."""
    import os
    import subprocess
    import sys

    from infra.process import terminate
    from tests.kafka_helpers import free_port
    from tests.probe_helpers import probe, wait_probe

    port, nobody = free_port(), free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "NEO4J_URI": f"bolt://127.0.0.1:{nobody}",
           "CHIMERA_METRICS_PORT": str(port)}
    with (tmp_path / "sink.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "sink", "neo4j", "--data-dir",
                                 str(tmp_path / "data")], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        code, body = wait_probe(port, "/readyz", lambda r: "store not set up yet (" in str(r[1]), timeout=60)
        assert code == 503 and len(body["reasons"]) == 1, (body, (tmp_path / "sink.log").read_text()[-2000:])
        assert body["reasons"][0].startswith("sinks: neo4j: store not set up yet (ServiceUnavailable: "), body
        assert probe(port, "/healthz") == (200, {"status": "live", "components": ["sinks"], "reasons": []})
    finally:
        terminate(proc, 20)
