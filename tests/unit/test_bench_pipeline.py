"""The pipeline benchmark's pure helpers (no broker)."""
from __future__ import annotations

import math

import pytest

from bench import pipeline as bp
from processors.config import PlanningConfig
from streams import samples


def test_percentile_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert bp.percentile(values, 50) == 50
    assert bp.percentile(values, 99) == 99
    assert bp.percentile(values, 100) == 100
    assert bp.percentile(values, 0) == 1
    assert bp.percentile([7.0], 99) == 7.0
    assert bp.percentile([3, 1, 2], 50) == 2  # unsorted input
    assert math.isnan(bp.percentile([], 50))
    with pytest.raises(ValueError):
        bp.percentile([1], 101)


def test_p99_of_a_small_sample_is_its_maximum():
    assert bp.percentile([1.0] * 99 + [500.0], 99) == 1.0
    assert bp.percentile([1.0] * 98 + [500.0, 600.0], 99) == 500.0


def test_latency_summary_counts_missing_keys_apart():
    sent = {"a": 1.0, "b": 2.0, "c": 3.0}
    received = {"a": 1.010, "b": 2.030}
    s = bp.latency_summary(sent, received)
    assert s["count"] == 2 and s["missing"] == 1
    assert s["p50_ms"] == pytest.approx(10.0) and s["p99_ms"] == pytest.approx(30.0)
    assert s["max_ms"] == pytest.approx(30.0)


def test_offered_rate():
    assert bp.offered_rate([0.0, 0.01, 0.02, 0.03]) == pytest.approx(100.0)
    assert bp.offered_rate([2.0, 0.0, 1.0]) == pytest.approx(1.0)  # any order
    assert math.isnan(bp.offered_rate([1.0]))


def test_parse_proc_stat_handles_spaces_and_parentheses_in_the_name():
    # fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    text = "1234 (python (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0\n"
    assert bp.parse_proc_stat(text) == pytest.approx(300 / bp.CLK_TCK)


def test_cpu_and_rss_of_this_process():
    import os
    assert bp.cpu_seconds(os.getpid()) > 0
    assert bp.rss_bytes(os.getpid()) > 1 << 20


def test_paced_sends_follow_the_schedule():
    import asyncio

    class FakeProducer:
        async def send(self, topic, key, value):
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    records = [(f"g{i}", b"x") for i in range(20)]
    sent = asyncio.run(bp.send_paced(FakeProducer(), records, rate=200.0))
    assert list(sent) == [k for k, _ in records]
    assert bp.offered_rate(sent.values()) == pytest.approx(200.0, rel=0.2)


def test_the_ceiling_plans_every_goal_once():
    config = PlanningConfig(refine_budget_seconds=0)
    goals = samples.sample_goals(12, 1_700_000_000_000, prefix="t")
    out = bp.plan_in_process([v for _, v in bp.encode_goals(goals)], config)
    assert out["plans.created"] == 12 and out["tasks.assigned"] > 0


def test_json_safe_turns_nan_into_null():
    import json
    assert json.loads(json.dumps(bp.json_safe({"a": math.nan, "b": [1.0, math.inf], "c": "x"}))) == \
        {"a": None, "b": [1.0, None], "c": "x"}
