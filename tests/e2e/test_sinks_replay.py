"""Replay: a past window re-planned into its own namespace matches what the worker recorded;
a changed planner configuration shows up in --compare."""
from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from processors.ids import plan_id
from streams import samples
from tests.kafka_helpers import collect, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def test_replay_reproduces_recorded_plans_and_compare_shows_a_changed_planner(kafka_bootstrap, planner_stack):
    from streams import replay as R
    from streams.settings import load_planning

    planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0)
    prefix = f"rp-{uuid.uuid4().hex[:6]}"
    since = int(time.time() * 1000)
    goals = samples.sample_goals(4, since, prefix=prefix)
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in goals])
    wanted = {plan_id(g["goal_id"]) for g in goals}
    assert len(collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value and r.value["plan_id"] in wanted,
                       count=len(wanted), timeout=120)) == len(wanted), "every goal planned"
    until = int(time.time() * 1000) + 1

    same = dataclasses.replace(load_planning(), refine_budget_seconds=0)
    ns = f"replay-{prefix}"
    res = R.replay(kafka_bootstrap, since, until, namespace=ns, config=same, refine=False)
    assert wanted <= res.plans and res.outputs[T.PLANS_CREATED.name] >= len(wanted)
    diffs = {d.plan_id: d for d in R.compare(kafka_bootstrap, ns) if d.plan_id in wanted}
    # seen once in ~10 runs: one replayed plan missing here although the replay planned it (the
    # message says what the replay published and what the namespace topics held then)
    assert set(diffs) == wanted, (res.outputs, res.skipped, sorted(wanted - set(diffs)),
                                  {t: R.latest_plans(kafka_bootstrap, (R.ns_topic(ns, t), R.ns_topic(ns, t)),
                                                     (t, t)).keys() for t in (T.PLANS_CREATED.name,)})
    assert all(d.recorded is not None and d.changes == {} for d in diffs.values()), \
        {p: d.changes for p, d in diffs.items()}
    # event ids are deterministic: the replayed plans carry the recorded ones
    assert all(d.recorded["event_id"] == d.replayed["event_id"] for d in diffs.values())

    # One plan only, with a "new planner version" (every hourly rate doubled): --compare shows the change.
    one = sorted(wanted)[0]
    dearer = dataclasses.replace(same, hourly_rates={k: 2 * v for k, v in same.hourly_rates.items()})
    res = R.replay(kafka_bootstrap, since, until, namespace=ns + "-dearer", plan=one, config=dearer, refine=False)
    assert res.plans == {one}
    (d,) = R.compare(kafka_bootstrap, ns + "-dearer")
    assert d.plan_id == one and "cost" in d.changes, d.changes
    before, after = d.changes["cost"]
    assert after > before
