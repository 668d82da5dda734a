"""The decomposer's training history (triton_models.decomposer_history.HISTORY_SQL) read from
chdb filled by the ClickHouse sink's own code (rows_for), delivered twice: only plans whose
final version COMPLETED within the goal's budget and schedule become (goal, task list) pairs,
with that final version's tasks and their observed hours."""
from __future__ import annotations

import json

import pytest

from tests import sinks_fixtures as F
from topics import registry as T

pytestmark = [pytest.mark.integration]

pytest.importorskip("torch")   # the answer's format lives with the model code (decomposer_net)

H = F.H


def _task(tid, start, hours, name, deps=()):
    return {**F.task(tid, start, hours, deps=deps), "name": name}


def _tasks():
    return [_task("x-1", 0, 10, "Design the billing API"), _task("x-2", 10, 20, "Build the billing API", ["x-1"])]


def _plan(name, goal, *, status="COMPLETED", cost=5_000.0, estimate=4_000.0, makespan=30.0, tasks=None,
          done_at=F.T0 + 40 * H, feedback=True):
    """A goal planned (v1), then ended with `status` (v2, the final version) after its tasks reported."""
    p = F.plan(f"p-{name}", goal["goal_id"], tasks=tasks or _tasks(), cost=cost)
    end = F.plan_update(p, version=2, makespan=makespan, status=status, cost_estimate=estimate,
                        reason=f"{status.lower()}: test")
    recs = [(T.GOALS_CREATED.name, goal), (T.PLANS_CREATED.name, p), (T.PLANS_UPDATED.name, end)]
    if feedback:
        for i, t in enumerate(end["plan"]["tasks"]):
            recs.append((T.EXECUTION_FEEDBACK.name, F.feedback(p["plan_id"], t["task_id"], "COMPLETED",
                                                               t["estimate"]["most_likely"] + 2 if i == 0 else None,
                                                               at_ms=done_at - (len(end["plan"]["tasks"]) - i))))
    return recs


def _records():
    objectives = ("Design the billing API", "Build it")
    g = {n: F.goal(f"g-{n}", title=f"Billing API {n}", objectives=objectives)
         for n in ("good", "over", "overrun", "late", "done-late", "cancelled", "failed", "running", "uncovered")}
    free = F.goal("g-free", title="Billing API free", objectives=objectives, budget=None, deadline_h=None)
    replanned = _tasks() + [_task("x-3", 30, 4, "Review the billing API", ["x-2"])]
    recs = (_plan("good", g["good"])
            + _plan("over", g["over"], cost=10_001.0)                         # planned over budget (10,000)
            + _plan("overrun", g["overrun"], estimate=12_000.0)               # what ran cost more than the budget
            + _plan("late", g["late"], makespan=101.0)                        # its schedule ran past the 100 h deadline
            + _plan("done-late", g["done-late"], done_at=F.T0 + 101 * H)      # its last task came after the deadline
            + _plan("cancelled", g["cancelled"], status="CANCELLED")
            + _plan("failed", g["failed"], status="FAILED")
            + _plan("running", g["running"], status="ACTIVE", feedback=False)
            + _plan("uncovered", g["uncovered"], tasks=[_task("y", 0, 3, "Gather requirements")])   # validator: no
            + _plan("free", free, cost=1e9, estimate=1e9, makespan=1e6, tasks=replanned))   # no budget, no deadline
    return F.sink_records(recs)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = F.filled_store(tmp_path_factory.mktemp("decomposer-history"), _records(), deliveries=2)
    yield s
    s.close()


def test_only_plans_completed_within_budget_and_schedule_become_pairs(store):
    from triton_models import decomposer_history as D
    logs: list[str] = []
    got = sorted(D.from_clickhouse(store, log=logs.append), key=lambda p: p[0]["goal_id"])
    assert [g["goal_id"] for g, _ in got] == ["g-free", "g-good"]
    good, answer = got[1]
    assert good == {"goal_id": "g-good", "title": "Billing API good", "domain": "software",
                    "objectives": ["Design the billing API", "Build it"]}
    assert json.loads(answer) == {"tasks": [            # renumbered; observed hours where reported, else planned
        {"task_id": "t1", "name": "Design the billing API", "duration_hours": 12.0, "depends_on": []},
        {"task_id": "t2", "name": "Build the billing API", "duration_hours": 20.0, "depends_on": ["t1"]}]}
    assert [t["name"] for t in json.loads(got[0][1])["tasks"]] == [   # the final version's task list
        "Design the billing API", "Build the billing API", "Review the billing API"]
    assert logs == ["history: 1 completed plans left out, the validator rejects them: {'objectives_not_covered': 1}"]


def test_the_sql_reads_the_final_version_once_per_task(store):
    from triton_models import decomposer_history as D
    _, rows = store.query(D.HISTORY_SQL)
    assert sorted({(r[0], r[1]) for r in rows}) == [("p-free", 2), ("p-good", 2), ("p-uncovered", 2)]
    assert len(rows) == 3 + 2 + 1                      # duplicates of the second delivery collapsed


from tests.unit.test_tiny_models import tiny_llama  # noqa: E402,F401  (the fixture: a tiny Llama from a config)


def test_train_decomposer_learns_from_the_history_topped_up_and_its_watch_waits_for_new_plans(
        store, tiny_llama, tmp_path, monkeypatch):   # noqa: F811
    """`chimera train decomposer --clickhouse` on that history (a tiny model: its answers never
    validate, so nothing is written), then the watch: no new good plan, no training; one more, trained."""
    from typer.testing import CliRunner

    from streams.cli import app
    from triton_models import decomposer_history as D
    from triton_models import repository
    from triton_models.decomposer import decomposer_net as net
    from triton_models.watch import RUNS, decomposer_watch
    monkeypatch.setattr(net, "BASE", tiny_llama)
    repo = tmp_path / "repo"
    res = CliRunner().invoke(app, ["train", "decomposer", "--clickhouse", str(store.data_dir), "--repository",
                                   str(repo), "--pairs", "8", "--held-out", "4", "--steps", "2", "--url", ""])
    assert res.exit_code == 3, res.output                                    # not better: nothing written
    assert "pairs: 2 from history, 6 synthetic (4 train, 4 held-out)" in res.output
    rec = json.loads((repo / "decomposer" / "evaluations.jsonl").read_text().splitlines()[-1])
    assert (rec["history_pairs"], rec["synthetic_pairs"], rec["held_out"], rec["accepted"]) == (2, 6, 4, False)
    assert repository.versions(repo, "decomposer") == [1]

    found = D.from_clickhouse(store, log=lambda *_: None)
    one_more = ({**found[0][0], "goal_id": "g-new"}, found[0][1])
    feed = iter([found, found + [one_more]])
    logs: list[str] = []
    before = RUNS.labels("decomposer", "not_better")._value.get()
    w = decomposer_watch(lambda: next(feed), repo, 1, want=8, held_out=4, steps=2, log=logs.append)
    assert w.tick() == "waiting" and "decomposer: 2 plans of history, 0 new since the last training run" in logs[-1]
    assert w.tick() == "not_better" and RUNS.labels("decomposer", "not_better")._value.get() == before + 1
    rec = json.loads((repo / "decomposer" / "evaluations.jsonl").read_text().splitlines()[-1])
    assert (rec["history_pairs"], rec["synthetic_pairs"]) == (3, 5)
