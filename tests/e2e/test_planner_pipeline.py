"""Goals in, plans out: a real broker, a real Faust worker, the real topics."""
from __future__ import annotations

import time
import urllib.request
import uuid

import pytest

from processors.ids import plan_id
from streams import samples
from tests.kafka_helpers import collect, free_port, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
HOUR_MS = 3_600_000


def _goals(prefix: str, n: int = 3) -> list[dict]:
    return samples.sample_goals(n, int(time.time() * 1000), prefix=prefix)


def _explicit(goal_id: str, tasks: list[dict], **over) -> dict:
    g = {"goal_id": goal_id, "title": f"explicit {goal_id}", "tasks": tasks, "created_at_ms": 1_700_000_000_000}
    g.update(over)
    return g


def _task(tid, hours, deps=()):
    return {"task_id": tid, "name": tid, "duration_hours": hours, "depends_on": list(deps)}


def _metric(port: int, name: str, label: str = "") -> float:
    """The sum of a Prometheus metric's samples (those with `label`, when given)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")) and label in line)


def test_goals_become_plans_assignments_alerts_and_bad_records_dead_letters(kafka_bootstrap, planner_stack):
    metrics_port = free_port()
    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, CHIMERA_METRICS_PORT=metrics_port)
    run = uuid.uuid4().hex[:8]
    good = _goals(f"e2e-{run}", 3)
    tight = _explicit(f"tight-{run}", [_task("a", 10), _task("b", 20, ["a"]), _task("c", 5, ["a"])],
                      constraints={"deadline_ms": 1_700_000_000_000 + 12 * HOUR_MS})
    cyclic = _explicit(f"cyclic-{run}", [_task("a", 1, ["b"]), _task("b", 1, ["a"])])
    negative = _explicit(f"negative-{run}", [_task("a", -3)])
    nameless = _explicit(f"nameless-{run}", [_task("a", 1)], title="")
    after = _explicit(f"after-{run}", [_task("x", 2), _task("y", 3, ["x"])])
    produce(kafka_bootstrap, T.GOALS_CREATED.name,
            [(g["goal_id"], g) for g in good] + [(f"garbage-{run}", b"this is not avro"),
                                                 (cyclic["goal_id"], cyclic), (negative["goal_id"], negative),
                                                 (nameless["goal_id"], nameless), (tight["goal_id"], tight),
                                                 (after["goal_id"], after)])
    valid = good + [tight, after]
    wanted = {plan_id(g["goal_id"]): g for g in valid}

    plans = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in wanted,
                    count=len(wanted))
    by_plan = {r.value["plan_id"]: r.value for r in plans}
    assert set(by_plan) == set(wanted), "every valid goal gets exactly one first plan"
    for pid, p in by_plan.items():
        assert p["goal_id"] == wanted[pid]["goal_id"] and p["version"] == 1
        assert p["tasks"] and p["makespan_hours"] > 0
        ids = {t["task_id"] for t in p["tasks"]}
        assert set(p["critical_path"]) <= ids
        for t in p["tasks"]:  # precedence holds in the published schedule
            for d in t["depends_on"]:
                assert next(x for x in p["tasks"] if x["task_id"] == d)["finish_hours"] <= t["start_hours"] + 1e-9
    after_plan = by_plan[plan_id(after["goal_id"])]
    assert after_plan["strategy"] == "explicit" and after_plan["makespan_hours"] == 5
    assert after_plan["critical_path"] == ["x", "y"]

    # The tight deadline (12 h for a 30 h critical path) raises a timeline alert.
    tight_pid = plan_id(tight["goal_id"])
    alerts = collect(kafka_bootstrap, T.RISKS_ALERTS.name, lambda r: r.value["plan_id"] == tight_pid, count=1)
    assert any(a.value["risk"]["category"] == "TIMELINE" and a.value["risk"]["severity"] in ("HIGH", "CRITICAL")
               for a in alerts)

    # Approved plans hand out the tasks without predecessors; pending ones wait.
    auto = {pid for pid, p in by_plan.items() if p["approval"] in ("AUTO_APPROVED", "APPROVED")}
    expected = {(pid, t["task_id"]) for pid in auto for t in by_plan[pid]["tasks"] if not t["depends_on"]}
    assert expected, "some sample goal is auto-approved: its first tasks must be handed out"
    assigned = collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.value["plan_id"] in wanted,
                       count=len(expected), settle=2.0)
    assert {(a.value["plan_id"], a.value["task"]["task_id"]) for a in assigned} == expected

    # Every bad record is in the DLQ with its reason and its source offset.
    bad_keys = {f"garbage-{run}": "not_avro", cyclic["goal_id"]: "cyclic_dependency",
                negative["goal_id"]: "negative_duration", nameless["goal_id"]: "missing_field"}
    dead = collect(kafka_bootstrap, T.GOALS_CREATED.dlq, lambda r: r.key in bad_keys, count=len(bad_keys))
    assert {d.key: d.headers["chimera.dlq.reason"] for d in dead} == bad_keys
    originals = collect(kafka_bootstrap, T.GOALS_CREATED.name, lambda r: r.key in bad_keys, count=len(bad_keys))
    where = {o.key: (o.partition, o.offset) for o in originals}
    for d in dead:
        assert d.headers["chimera.source.topic"] == T.GOALS_CREATED.name
        assert (int(d.headers["chimera.source.partition"]), int(d.headers["chimera.source.offset"])) == where[d.key]
    assert _metric(metrics_port, "layer2_plans_created_total") == len(wanted)
    assert _metric(metrics_port, "layer2_validation_errors_total", 'reason="cyclic_dependency"') == 1
    assert "a -> b -> a" in next(d for d in dead if d.key == cyclic["goal_id"]).headers["chimera.dlq.detail"] or \
        "b -> a -> b" in next(d for d in dead if d.key == cyclic["goal_id"]).headers["chimera.dlq.detail"]


def test_replay_yields_identical_records(kafka_bootstrap, planner_stack):
    """A second worker with fresh state over the same goals publishes byte-identical plans."""
    run = uuid.uuid4().hex[:8]
    goals = _goals(f"replay-{run}", 2)
    wanted = {plan_id(g["goal_id"]) for g in goals}
    planner_stack.reserve("-replay")   # the second worker's group starts before the goals too
    first = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0)
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in goals])
    plans = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in wanted, count=2)
    assert {r.value["plan_id"] for r in plans} == wanted, "the first worker plans both goals"
    first.stop()
    second = planner_stack("-replay", PLANNING_REFINE_BUDGET_SECONDS=0)
    again = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value["plan_id"] in wanted, count=4,
                    settle=2)
    assert second.alive()
    assert len(again) == 4, f"each worker publishes each plan once: {len(again)} records"
    raw = {}
    for r in again:
        raw.setdefault(r.value["plan_id"], set()).add(r.raw)
    assert set(raw) == wanted
    assert all(len(v) == 1 for v in raw.values()), "a replay must not change a single byte"
    assert {r.raw for r in plans} == {next(iter(v)) for v in raw.values()}
