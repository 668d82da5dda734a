"""Expected vs actual (issue 8 §5): what an assignment says its task must produce, what the
executor reports, and the planner's categorised violations (a risk alert and a failed attempt)."""
from __future__ import annotations

from executor.tasks.base import _BY_KIND
from processors import consistency as C, lifecycle as L
from streams import codec
from topics import registry as T
from topics.serde import serde
from tests.unit.test_live import CFG, PID, T0, _fb, _grant, _live, _of, _start, _check_records


def test_expectation_follows_the_module_that_runs_the_task():
    assert C.expectation({"name": "Build the artefact"}) == C.Expectation(("artefact.bin",), 0)
    assert C.expectation({"name": "Deploy", "phase": "deploy"}).files == ("artefact.bin",)
    assert C.expectation({"name": "wasm: build-step out/app.wasm src/a.txt"}).files == ("out/app.wasm",)
    assert C.expectation({"name": "Validate the input data"}) == C.Expectation((), 0)
    assert C.expectation({"name": "wasm: compute 100 2"}).files == ()
    assert C.KIND_MODULE == _BY_KIND, "the planner's view of kind -> module is the executor's registry"


def test_violations_are_categorised_in_a_stable_order():
    e = C.Expectation(("artefact.bin",), 0)
    assert C.violations(e, C.Produced(("artefact.bin",), 0)) == ()
    got = C.violations(e, C.Produced(("z.tmp", "core.dump"), 3))
    assert [(v.category, v.detail) for v in got] == [
        ("missing_output", "artefact.bin was not produced"), ("wrong_status", "exit status 3, expected 0"),
        ("unexpected_file", "core.dump was not expected"), ("unexpected_file", "z.tmp was not expected")]
    assert {v.category for v in got} <= set(C.CATEGORIES)


def _build_goal():
    return [{"task_id": "a", "name": "Build the artefact", "duration_hours": 2, "capabilities": ["build"]},
            {"task_id": "b", "name": "Run the tests", "duration_hours": 1, "depends_on": ["a"],
             "capabilities": ["build"]}]


def test_assignment_states_the_expectation_and_a_violation_alerts_and_fails_the_attempt():
    state, _ = _start(tasks=_build_goal())
    state, events = _grant(state, "a")
    [assigned] = codec.records(_of(events, L.TaskAssigned))
    assert assigned.topic == T.TASKS_ASSIGNED.name
    assert serde(assigned.topic).decode(serde(assigned.topic).encode(assigned.value))["expects"] == {
        "files": ["artefact.bin"], "exit_status": 0}
    bad, events = _fb(state, "a", "COMPLETED", T0 + 10, attempt=1, fid="c1", produced=("other.bin",), exit_status=0)
    _check_records(events)
    [alert] = _of(events, L.RiskAlerted)
    assert alert.risk.category.value == "TECHNICAL"
    assert "missing_output" in alert.risk.title and "unexpected_file" in alert.risk.title
    assert "artefact.bin was not produced" in alert.risk.description
    run = bad.runs["a"]
    assert run.status is L.RunStatus.RETRY and run.attempt == 2 and run.failures == 1
    assert [e.outcome for e in _of(events, L.AllocationReleased)] == ["FAILURE"]
    assert "b" not in bad.runs, "a successor is not released by an inconsistent completion"
    good, events = _fb(state, "a", "COMPLETED", T0 + 10, attempt=1, fid="c2", produced=("artefact.bin",),
                       exit_status=0)
    assert good.runs["a"].status is L.RunStatus.COMPLETED and not _of(events, L.RiskAlerted)
    unchecked, _ = _fb(state, "a", "COMPLETED", T0 + 10, attempt=1, fid="c3")   # not reported: not checked
    assert unchecked.runs["a"].status is L.RunStatus.COMPLETED


def test_feedback_record_carries_what_was_produced():
    s = serde(T.EXECUTION_FEEDBACK.name)
    rec = {"event_id": "e", "plan_id": PID, "task_id": "a", "status": "COMPLETED", "reported_at_ms": T0, "attempt": 1,
           "produced": {"files": ["artefact.bin"], "exit_status": 0}}
    fb = codec.feedback_from_record(s.decode(s.encode(rec)))
    assert fb.produced == ("artefact.bin",) and fb.exit_status == 0
    old = {k: v for k, v in rec.items() if k != "produced"}
    assert codec.feedback_from_record(s.decode(s.encode(old))).produced is None
