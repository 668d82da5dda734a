"""The demo's executed-tasks summary (streams/cli.py), on records shaped like the executor's:
who ran what is read from the feedback itself, time per task is p50 and max, failures keep
their reasons, and a sample task that did not complete in the sandbox is named."""
from __future__ import annotations

import json
from types import SimpleNamespace

from streams import cli


def _done(plan, task, who, wall_s, at, module="test-run"):
    return {"plan_id": plan, "task_id": task, "attempt": 1, "status": "COMPLETED", "reported_at_ms": at,
            "message": json.dumps({"executor": who, "module": module, "summary": "", "wall_s": wall_s, "fuel": 1})}


def _result(executed):
    tasks = [{"task_id": t} for t in ("a", "b", "c", "d")]
    run = SimpleNamespace(updates={}, created={}, assignments=[
        {"plan_id": "p", "task": {"task_id": t}, "attempt": 1, "assigned_at_ms": 1000} for t in "abcd"])
    return {"executors": ["ex-1", "ex-2"], "run": run, "plans": {"p": {"tasks": tasks}}, "executed": executed}


def test_ran_by_reads_the_executor_from_the_feedback():
    assert cli._ran_by(_done("p", "a", "ex-1", 0.1, 2000)) == "ex-1"
    assert cli._ran_by({"status": "FAILED", "message": "out_of_fuel: x (executor ex-2, module compute)"}) == "ex-2"
    assert cli._ran_by({"status": "COMPLETED", "message": ""}) is None        # simulated or forged


def test_summary_shows_counts_p50_and_max_failures_and_what_did_not_complete():
    executed = [_done("p", "a", "ex-1", 0.010, 2000), _done("p", "b", "ex-1", 0.030, 4000),
                _done("p", "c", "ex-1", 0.020, 3000),
                {"plan_id": "p", "task_id": "d", "attempt": 1, "status": "FAILED", "reported_at_ms": 1500,
                 "message": "out_of_memory: grew past 64 MB (executor ex-2, module data-check)"}]
    with cli.console.capture() as cap:
        cli._executed_summary(_result(executed))
    out = cap.get()
    assert "20.0 / 30.0" in out            # sandbox ms p50 / max of ex-1
    assert "2.00 / 3.00" in out            # assigned -> done s p50 / max
    assert "out_of_memory: grew past 64 MB" in out and "failures in the sandbox: 1" in out
    assert "3 of 4 tasks COMPLETED" in out and "p/d" in out
    with cli.console.capture() as cap:
        cli._executed_summary(_result(executed[:3] + [_done("p", "d", "ex-2", 0.005, 1200)]))
    assert "4 of 4 tasks COMPLETED" in cap.get()


def test_the_demo_executors_offer_every_capability_the_sample_goals_tasks_need():
    """Gates need `review` and pools `ops`, which no template file names: resources offering
    only the templates' capabilities left every gate unassigned and the plans stalled."""
    from processors.decomposition import STRATEGIES, decompose
    from streams import codec, samples
    sample = samples.sample_goals(6, 0, prefix="demo")
    offered = set(cli._demo_capabilities(sample))
    assert {"review", "ops"} <= offered
    for record in sample:
        goal = codec.goal_from_record(record)
        for strategy in (None, *STRATEGIES):
            for t in decompose(goal, strategy).tasks:
                assert set(t.capabilities) <= offered, (record["title"], strategy, t.task_id)
