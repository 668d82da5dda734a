"""Chroma sink (episodic memory) on a real broker, PersistentClient and the shipped MiniLM model."""
from __future__ import annotations

import pytest

from tests import sinks_fixtures as F
from topics import registry as T

pytestmark = [pytest.mark.integration]


def _history(prefix: str) -> dict[str, list]:
    """Goal g1 (billing API) fully completed with known actuals; g2 (ML model) with a failure."""
    recs = F.sample_records(prefix)
    p1 = recs[T.PLANS_UPDATED.name][0][1]["plan"]        # v2 of p1: t1 (10 h), t2 (20 h)
    p2 = recs[T.PLANS_CREATED.name][1][1]               # p2: task a (5 h)
    recs[T.EXECUTION_FEEDBACK.name] += [
        (p1["plan_id"], F.feedback(p1["plan_id"], "t2", "COMPLETED", 24.0, at_ms=F.T0 + 9000)),
        (p2["plan_id"], F.feedback(p2["plan_id"], "a", "FAILED", 1.0, message="no GPU")),
    ]
    return recs


def _episodes(memory, prefix):
    got = memory.episodes.get(where={"goal_id": {"$in": [f"{prefix}-g1", f"{prefix}-g2"]}},
                              include=["metadatas", "documents"])
    return {i: (m, d) for i, m, d in zip(got["ids"], got["metadatas"], got["documents"])}


def test_chroma_sink_remembers_outcomes_and_replays_idempotently(kafka_bootstrap, stores, tmp_path, withdraw):
    from sinks.base import SinkRunner
    from sinks.chroma import ChromaSink, Memory

    prefix = F.unique("mem")
    withdraw.append(F.sample_resource(prefix))
    for topic, pairs in _history(prefix).items():
        F.produce_raw(kafka_bootstrap, topic, pairs)
    F.produce_raw(kafka_bootstrap, T.GOALS_CREATED.name, [(f"{prefix}-poison", b"{not avro}")])
    group = F.unique("chimera-sink-chroma-test")
    sink = ChromaSink(tmp_path / "chroma")
    runner = SinkRunner(sink, kafka_bootstrap, group=group, batch_age_s=0.2)
    with F.running(runner):
        F.wait_until(lambda: (e := _episodes(sink.memory, prefix)) and len(e) == 2
                     and e[f"{prefix}-g1"][0].get("outcome") == "COMPLETED"
                     and e[f"{prefix}-g1"][0].get("plan_version") == 2
                     and e[f"{prefix}-g2"][0].get("outcome") == "FAILED", what="two finished episodes")
        F.wait_until(lambda: runner.dead_letters >= 1, what="the poison goal in the DLQ")
        eps = _episodes(sink.memory, prefix)
    m1, doc1 = eps[f"{prefix}-g1"]
    assert doc1.startswith("Launch billing API")
    assert (m1["plan_version"], m1["task_count"], m1["actual_work_hours"], m1["planned_work_hours"]) == (2, 2, 36.0, 30.0)
    assert m1["duration_factor"] == pytest.approx(1.2)
    m2, _ = eps[f"{prefix}-g2"]
    assert '"a": "no GPU"' in m2["failures"]
    dead = [r for r in F.read_dlq(kafka_bootstrap) if r["key"] == f"{prefix}-poison"]
    assert dead and dead[0]["headers"]["chimera.dlq.sink"] == "chroma"

    # Replay everything into the same folder: the same episodes, nothing added.
    F.reset_group(kafka_bootstrap, group, sink.topics)
    again = ChromaSink(tmp_path / "chroma")
    replay = SinkRunner(again, kafka_bootstrap, group=group, batch_age_s=0.2)
    with F.running(replay):
        F.wait_until(lambda: sum(replay.committed.values()) >= sum(runner.committed.values()), what="the replay")
        assert _episodes(again.memory, prefix) == eps
        n_feedback = len(again.memory.feedback.get(where={"plan_id": f"{prefix}-p1"})["ids"])
    assert n_feedback == 2

    # The planner's look-up: a reworded goal finds the completed episode above the threshold.
    memory = Memory(tmp_path / "chroma").open()
    hit = memory.recall(F.goal("x", title="Launch the billing API", objectives=("Design", "Build")))
    assert hit is not None and hit.goal_id.startswith(prefix) and hit.similarity > 0.8
    assert [t["task_id"] for t in hit.decomposition] == ["t1", "t2"] and hit.duration_factor == pytest.approx(1.2)
    assert memory.recall(F.goal("y", title="Plant tomatoes in the garden", domain="garden",
                                objectives=("Dig", "Water"))) is None


def test_memory_over_http_when_chroma_url_is_set(tmp_path, monkeypatch):
    """CHROMA_URL switches the same code to HttpClient: a real `chroma run` server on loopback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from infra.process import terminate
    from sinks.chroma import Memory
    from tests.kafka_helpers import free_port

    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    log = (tmp_path / "chroma.log").open("wb")
    proc = subprocess.Popen([str(chroma), "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        monkeypatch.setenv("CHROMA_URL", f"http://127.0.0.1:{port}")

        def up():
            try:
                return Memory().open()
            except Exception:  # noqa: BLE001 - not listening yet
                return None
        memory = F.wait_until(up, timeout=60, what="chroma run to answer")
        g = F.goal("http-g1", title="Set up the CI pipeline")
        p = F.plan("http-p1", "http-g1", tasks=[F.task("a", 0, 4)])
        memory.apply([g], [p], [F.feedback("http-p1", "a", "COMPLETED", 5.0)])
        hit = memory.recall(F.goal("q", title="Set up a CI pipeline"))
        assert hit is not None and hit.goal_id == "http-g1" and hit.duration_factor == pytest.approx(1.25)
        assert not (tmp_path / "chroma").exists() and os.listdir(tmp_path / "srv")  # the server holds the data
    finally:
        terminate(proc, 20)
        log.close()
