"""Which module runs a task (pure), and the executor's records against the current schemas."""
from __future__ import annotations

import pytest

from processors.execution import explicit_module, task_kind, task_ref


@pytest.mark.parametrize("task,kind", [
    ({"phase": "test", "name": "Anything"}, "verify"),
    ({"phase": "build", "name": "Write the API"}, "build"),
    ({"phase": "", "name": "Clean the dataset"}, "data"),
    ({"phase": "release", "name": "x"}, "deploy"),
    ({"phase": "", "name": "Benchmark the model"}, "compute"),
    ({"phase": "", "name": "Think", "capabilities": ["qa"]}, "verify"),
    ({"phase": "", "name": "Think hard"}, "analysis"),
])
def test_task_kind(task, kind):
    assert task_kind(task) == kind


def test_explicit_module_in_description_or_capability():
    assert explicit_module({"description": "Some text\nwasm: compute 100 2\n"}) == ("compute", ("100", "2"))
    assert explicit_module({"capabilities": ["qa", "wasm:test-run"]}) == ("test-run", ())
    assert explicit_module({"description": "no module here"}) == (None, ())


def test_task_ref_from_an_assignment():
    ref = task_ref({"plan_id": "p", "attempt": 3, "assigned_to": "ex-1",
                    "task": {"task_id": "t", "name": "Run tests", "phase": "test", "description": "",
                             "capabilities": ["qa"], "success_criteria": ["green"]}})
    assert (ref.plan_id, ref.task_id, ref.attempt, ref.kind, ref.module, ref.assigned_to) == \
        ("p", "t", 3, "verify", None, "ex-1")


def test_every_kind_has_a_module_and_records_fit_the_current_schemas(tmp_path):
    pytest.importorskip("wasmtime")
    pytest.importorskip("confluent_kafka")
    from executor.service import ExecutorConfig, announcement, feedback
    from executor.tasks import module_for
    from topics.serde import serde
    for kind in ("analysis", "build", "verify", "acceptance", "deploy", "gate", "mitigation", "data", "compute"):
        ref = task_ref({"plan_id": "p", "task": {"task_id": "t", "name": "", "phase": kind}})
        assert module_for(ref) is not None, kind
    ref = task_ref({"plan_id": "p", "task": {"task_id": "t", "name": "x"}})
    for status in ("STARTED", "PROGRESS", "COMPLETED", "FAILED"):
        rec = feedback(ref, status, pct=50)
        assert serde("execution.feedback").decode(serde("execution.feedback").encode(rec, strict=True)) == rec
    assert feedback(ref, "PROGRESS", pct=50)["event_id"] != feedback(ref, "PROGRESS", pct=60)["event_id"]
    assert feedback(ref, "COMPLETED")["event_id"] == feedback(ref, "COMPLETED")["event_id"]
    rec = announcement(ExecutorConfig(bootstrap="x", executor_id="ex-1", slots=3))
    assert serde("resources.availability").decode(serde("resources.availability").encode(rec, strict=True)) == rec
    assert rec["capacities"] == {"agents": 3.0} and rec["kind"] == "agents"   # one unit per slot
