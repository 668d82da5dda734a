"""The decomposer history's pure part: HISTORY_SQL's rows -> (goal, answer) pairs, the synthetic
top-up and the held-out split (the SQL itself: tests/integration/test_decomposer_history.py)."""
from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")   # the answer's format lives with the model code (decomposer_net)

OBJ = ["Design the API", "Deploy it"]


def _row(plan, task, name, deps=(), planned=4.0, observed=None, goal="g1", version=3, start=0.0, objectives=OBJ):
    return (plan, version, goal, f"title {goal}", "software", objectives, task, name, list(deps), planned, observed,
            start)


def test_rows_become_one_validated_pair_per_plan_renumbered_with_observed_hours():
    from triton_models import decomposer_history as D
    rows = [_row("p1", "p1-a", "Design the API", observed=12.26),
            _row("p1", "p1-b", "Deploy the API", deps=["p1-a", "gone"], planned=3.1),
            _row("p1", "p1-c", "Check", deps=["p1-b"], observed=0.1)]
    [(goal, text)] = D.pairs(rows, log=pytest.fail)
    assert goal == {"goal_id": "g1", "title": "title g1", "domain": "software", "objectives": OBJ}
    assert json.loads(text)["tasks"] == [
        {"task_id": "t1", "name": "Design the API", "duration_hours": 12.5, "depends_on": []},
        {"task_id": "t2", "name": "Deploy the API", "duration_hours": 3.0, "depends_on": ["t1"]},   # dangling dep gone
        {"task_id": "t3", "name": "Check", "duration_hours": 0.5, "depends_on": ["t2"]}]
    assert D._hours(2.0, math.nan) == 2.0 and D._hours(2.0, 0.0) == 2.0 and D._hours(2.0, 7.7) == 7.5


def test_answers_the_validator_rejects_are_left_out_with_their_reason_and_a_goal_gives_one_pair():
    from triton_models import decomposer_history as D
    logs: list[str] = []
    rows = [_row("p1", "a", "Gather requirements"),                                  # covers no objective
            _row("p2", "a", "Design the API", goal="g2"), _row("p2", "b", "Deploy it", ["a"], goal="g2"),
            _row("p3", "a", "Design the API", goal="g2"), _row("p3", "b", "Deploy", ["b"], goal="g2"),   # a cycle
            _row("p4", "a", "Design the API", goal="g2"), _row("p4", "b", "Deploy the API", goal="g2"),
            _row("p5", "a", 'Design the "v2" API', goal="g3"), _row("p5", "b", "Deploy it", goal="g3")]
    got = D.pairs(rows, log=logs.append)
    assert [g["goal_id"] for g, _ in got] == ["g2"]
    assert "Deploy the API" in got[0][1]                                            # g2's last valid plan
    assert logs == ["history: 3 completed plans left out, the validator rejects them: "   # a quote in a name:
                    "{'objectives_not_covered': 1, 'cyclic_dependency': 1, 'not_writable': 1}"]   # never decoded


def test_short_history_is_topped_up_with_synthetic_pairs_and_each_source_is_held_out_in_its_share():
    from triton_models import decomposer_history as D
    history = [({"goal_id": f"h{i}"}, "{}") for i in range(30)]
    pairs, synthetic = D.mixed(history, 120, seed=1)
    assert synthetic == 90 and len(pairs) == 120 and pairs[:30] == history
    assert all(g["goal_id"].startswith("dec-1-") for g, _ in pairs[30:])
    assert D.mixed(history, 20) == (history, 0)                                     # enough history: no synthetic
    train, held = D.split(pairs, 16)
    assert len(held) == 16 and len(train) == 104 and not {id(p) for p in train} & {id(p) for p in held}
    assert sum(g["goal_id"].startswith("h") for g, _ in held) == 4                  # 30/120 of 16
    assert D.split(pairs, 16) == (train, held)
    assert D.split(history[:1], 16) == (history[:1], [])                            # nothing to hold out
