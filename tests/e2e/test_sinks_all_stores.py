"""End to end: a real planner worker and all three sinks on their real stores. Goals are
planned; each store holds exactly the expected records; the sinks are stopped, more goals
are planned, the sinks restart: nothing lost, nothing doubled. Then Neo4j is killed while
goals keep coming: they are planned meanwhile, and the graph catches up once Neo4j is back."""
from __future__ import annotations

import time
import uuid

import pytest

from processors.ids import plan_id
from streams import samples
from tests import sinks_fixtures as F
from tests.kafka_helpers import collect, held, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]
OUTAGE_S = 30  # the drill: Neo4j's process killed, down 30 s, restarted on its folder
WAVES = 3      # goals produced at 0, 10 and 20 s into the outage: each wave is planned while Neo4j is down


def _expected(bootstrap: str, plans: set[str]) -> dict:
    """What the topics hold for these plans: plan versions and event ids per topic."""
    versions, events = set(), {}
    for i, topic in enumerate((T.PLANS_CREATED.name, T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name,
                               T.RISKS_ALERTS.name)):
        recs = held(bootstrap, topic, lambda r: r.key in plans, settle=2.0 if i == 0 else 0.0)
        events[topic] = {r.value["event_id"] for r in recs}
        for r in recs:
            p = r.value.get("plan") or r.value
            if "version" in p and "tasks" in p:
                versions.add((p["plan_id"], p["version"]))
    return {"versions": versions, "events": events}


def _ch_counts(store, plans: set[str], goals: set[str]) -> dict:
    pl, gl = sorted(plans), sorted(goals)
    one = lambda sql, **p: store.query(sql, p)[1][0][0]  # noqa: E731
    return {
        "goals": one("SELECT count() FROM chimera.goals FINAL WHERE goal_id IN {g:Array(String)}", g=gl),
        "plans": one("SELECT count() FROM chimera.plans FINAL WHERE plan_id IN {p:Array(String)}", p=pl),
        "events": one("SELECT count() FROM chimera.events FINAL WHERE key IN {k:Array(String)}", k=pl + gl),
    }


def _neo_counts(graph, plans: set[str], goals: set[str]) -> dict:
    return {"goals": graph.count("MATCH (g:Goal) WHERE g.id IN $g RETURN count(g) AS n", g=sorted(goals)),
            "plans": graph.count("MATCH (p:Plan) WHERE p.plan_id IN $p RETURN count(p) AS n", p=sorted(plans)),
            "has_plan": graph.count("MATCH (g:Goal)-[r:HAS_PLAN]->() WHERE g.id IN $g RETURN count(r) AS n",
                                    g=sorted(goals))}


def test_all_three_sinks_hold_exactly_the_planned_records_across_a_sink_restart(kafka_bootstrap, planner_stack,
                                                                               stores, tmp_path):
    from infra import containers
    from sinks import service
    from sinks.clickhouse import reader
    from sinks.neo4j import Graph

    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0)
    prefix = f"all-{uuid.uuid4().hex[:6]}"
    first = samples.sample_goals(4, int(time.time() * 1000), prefix=prefix + "-a")
    more = samples.sample_goals(3, int(time.time() * 1000), prefix=prefix + "-b")
    during_outage = samples.sample_goals(2 * WAVES, int(time.time() * 1000), prefix=prefix + "-c")
    groups = f"chimera-sink-{prefix}-"

    def plan_goals(goals):
        produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in goals])
        want = {plan_id(g["goal_id"]) for g in goals}
        got = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value and r.value["plan_id"] in want,
                      count=len(want), timeout=120)
        assert {r.value["plan_id"] for r in got} == want, "every goal planned (the expected counts come from the topics)"
        return want

    with containers.neo4j(data_dir=tmp_path / "neo4j") as neo:
        graph = Graph(neo.uri)
        try:
            plans = plan_goals(first)
            goals = {g["goal_id"] for g in first}
            with service.running(["all"], kafka_bootstrap, data_dir=tmp_path, neo4j_uri=neo.uri,
                                 group_prefix=groups, batch_age_s=0.2) as svc:
                ch = svc.runners["clickhouse"].sink.store
                mem = svc.runners["chroma"].sink.memory
                exp = _expected(kafka_bootstrap, plans)
                n_events = sum(len(v) for v in exp["events"].values()) + len(goals)
                want_ch = {"goals": len(goals), "plans": len(exp["versions"]), "events": n_events}
                want_neo = {"goals": len(goals), "plans": len(exp["versions"]), "has_plan": len(exp["versions"])}
                F.wait_until(lambda: all(r.ready.is_set() for r in svc.runners.values()) and mem.episodes is not None
                             and _ch_counts(ch, plans, goals) == want_ch
                             and _neo_counts(graph, plans, goals) == want_neo
                             and len(mem.episodes.get(ids=sorted(goals))["ids"]) == len(goals),
                             timeout=120, what=lambda: f"all stores: {_ch_counts(ch, plans, goals)} "
                                                       f"{_neo_counts(graph, plans, goals)}")

            # Sinks stopped: more goals are planned meanwhile; then the sinks restart from their offsets.
            plans |= plan_goals(more)
            goals |= {g["goal_id"] for g in more}
            exp = _expected(kafka_bootstrap, plans)
            n_events = sum(len(v) for v in exp["events"].values()) + len(goals)
            want_ch = {"goals": len(goals), "plans": len(exp["versions"]), "events": n_events}
            want_neo = {"goals": len(goals), "plans": len(exp["versions"]), "has_plan": len(exp["versions"])}
            with service.running(["all"], kafka_bootstrap, data_dir=tmp_path, neo4j_uri=neo.uri,
                                 group_prefix=groups, batch_age_s=0.2) as svc:
                ch = svc.runners["clickhouse"].sink.store
                mem = svc.runners["chroma"].sink.memory
                F.wait_until(lambda: all(r.ready.is_set() for r in svc.runners.values()) and mem.episodes is not None
                             and _ch_counts(ch, plans, goals) == want_ch
                             and _neo_counts(graph, plans, goals) == want_neo
                             and len(mem.episodes.get(ids=sorted(goals))["ids"]) == len(goals),
                             timeout=120, what=lambda: f"all stores after restart: {_ch_counts(ch, plans, goals)} "
                                                       f"{_neo_counts(graph, plans, goals)}")
                time.sleep(1.0)  # anything doubled would show now
                assert _ch_counts(ch, plans, goals) == want_ch
                assert _neo_counts(graph, plans, goals) == want_neo
                assert sorted(mem.episodes.get(ids=sorted(goals))["ids"]) == sorted(goals)
                lines = service.summary(svc, failed_task=(sorted(plans)[0], "nope"), goal=first[0])
                assert lines[0].startswith("ClickHouse planning_latency: ") and len(lines) >= 3, lines

                # Neo4j killed mid-stream: planning goes on (plans arrive during the outage), the
                # Neo4j sink pauses and retries, and after Neo4j restarts on its folder it catches up.
                neo.kill()
                t0 = time.monotonic()
                planned_at = []
                for w in range(WAVES):   # plans keep coming all through the outage
                    time.sleep(max(0.0, w * OUTAGE_S / WAVES - (time.monotonic() - t0)))
                    plans |= plan_goals(during_outage[2 * w:2 * w + 2])
                    planned_at.append(round(time.monotonic() - t0, 1))
                    assert not neo.running, "Neo4j came back by itself"
                    if w == 0:
                        F.wait_until(lambda: svc.runners["neo4j"].paused, what="the Neo4j sink to pause")
                goals |= {g["goal_id"] for g in during_outage}
                time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
                # every wave was planned before Neo4j came back (the sink's outage never held planning)
                assert planned_at[-1] <= OUTAGE_S, planned_at
                assert not neo.running and svc.runners["neo4j"].paused
                neo.start()
                graph.close()
                graph = Graph(neo.uri)
                exp = _expected(kafka_bootstrap, plans)
                n_events = sum(len(v) for v in exp["events"].values()) + len(goals)
                want_ch = {"goals": len(goals), "plans": len(exp["versions"]), "events": n_events}
                want_neo = {"goals": len(goals), "plans": len(exp["versions"]), "has_plan": len(exp["versions"])}
                F.wait_until(lambda: _neo_counts(graph, plans, goals) == want_neo
                             and _ch_counts(ch, plans, goals) == want_ch, timeout=120,
                             what=lambda: f"catch-up after the outage: {_neo_counts(graph, plans, goals)}")
                assert svc.runners["neo4j"].retries > 0
        finally:
            graph.close()
    store = reader(tmp_path / "clickhouse")
    try:
        assert _ch_counts(store, plans, goals) == want_ch
    finally:
        store.close()
