"""bench.decomposer's history: varied goals run through the planner's own lifecycle and stored with
the ClickHouse sink's code give exactly one pair per goal that completed within budget and
schedule, and none for the goals planned over budget, finished late, failed or cancelled.
No training. (A module of its own: chdb opens one folder per process at a time.)"""
from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.integration]

pytest.importorskip("torch")   # the answer's format lives with the model code (decomposer_net)


def test_goals_are_varied_deterministic_and_a_fifth_end_badly():
    from bench import decomposer as B
    got = B.goals(40, seed=3)
    assert got == B.goals(40, seed=3) and got != B.goals(40, seed=4)
    assert len({(g["title"], tuple(g["objectives"])) for g, _ in got}) == 40
    assert len({g["domain"] for g, _ in got}) == 5 and len({g["title"] for g, _ in got}) >= 30
    assert all(not g["tasks"] for g, _ in got)                  # the planner's strategies make the tasks
    outcomes = [o for _, o in got]
    assert outcomes.count("good") == 32 and {o for o in outcomes if o != "good"} == set(B.BAD)


def test_only_the_plans_completed_within_budget_and_schedule_become_pairs(tmp_path):
    from bench import decomposer as B
    n, seed = 25, 1
    outcomes = B.history(tmp_path / "ch", n, seed=seed, bad_every=5)
    assert outcomes == {"good": 20, "over_budget": 2, "late": 1, "failed": 1, "cancelled": 1}
    pairs = B.pairs_from(tmp_path / "ch", log=pytest.fail)     # no good plan is rejected by the validator
    by_outcome = {g["goal_id"]: o for g, o in B.goals(n, seed=seed, bad_every=5)}
    assert sorted(g["goal_id"] for g, _ in pairs) == sorted(k for k, o in by_outcome.items() if o == "good")
    for goal, answer in pairs:
        tasks = json.loads(answer)["tasks"]
        assert len(tasks) >= 10 and [t["task_id"] for t in tasks] == [f"t{i}" for i in range(1, len(tasks) + 1)]
        assert len({t["duration_hours"] for t in tasks}) > 1      # the executors' varied hours, not one figure
    v = B.variety(pairs[:15], pairs[15:])
    assert v["distinct_answers"] == v["pairs"] == 20 and v["held_out_objectives_in_train"] == 0
