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


def _all_activities():
    """Every activity of every built-in template, with its template: phases, component and
    function activities, and the risks' mitigation tasks."""
    from processors.decomposition.templates import builtin_templates
    for tpl in builtin_templates():
        for a in (*[a for p in tpl.phases for a in p.activities], *tpl.component_activities,
                  *tpl.function_activities, *[r.mitigation_task for r in tpl.risks if r.mitigation_task]):
            yield tpl, a


def test_every_builtin_template_activity_runs_the_module_of_its_declared_kind():
    """The decomposer's task carries its activity's declared kind to the executor: the module
    chosen for it is the one for that kind, not one guessed from words (research `write-up`
    is a deploy, not an analysis; a gate is a test run, not a build step)."""
    pytest.importorskip("wasmtime")
    from executor.tasks import module_for
    from processors.consistency import KIND_MODULE, task_fields
    from processors.decomposition.strategies import Builder
    from processors.decomposition.templates import Unit
    from processors.model import Goal
    goal = Goal("g", "Any goal", 0)
    seen = 0
    for tpl, act in _all_activities():
        b = Builder(goal, tpl)
        tid = b.add(act.id, act, unit=Unit(id="u", name="Unit"), mitigation=act.kind == "mitigation")
        task = {"task_id": tid, **task_fields(b.tasks[tid])}
        ref = task_ref({"plan_id": "p", "task": task})
        assert ref.kind == act.kind, (tpl.name, act.id)
        assert module_for(ref).name == KIND_MODULE[act.kind], (tpl.name, act.id, act.kind)
        seen += 1
    assert seen >= 25


def test_generated_gates_checks_and_mitigations_keep_their_kind():
    """The activities the strategies add themselves (phase gates, objective checks, risk reviews,
    mitigations) declare a kind too: every gate runs the test-run module, in every strategy."""
    pytest.importorskip("wasmtime")
    from executor.tasks import module_for
    from processors.consistency import task_fields
    from processors.decomposition import STRATEGIES, decompose
    from processors.execution import declared_kind
    from processors.model import Goal
    gates = 0
    for domain in ("software", "data_ml", "infrastructure", "research", "generic"):
        goal = Goal(f"g-{domain}", "Ship the thing", 0, domain=domain, objectives=("Booking workflow",))
        for strategy in STRATEGIES:
            for t in decompose(goal, strategy).tasks:
                ref = task_ref({"plan_id": "p", "task": {"task_id": t.task_id, **task_fields(t)}})
                if t.task_id.startswith(("gate", "risk-review")):
                    gates += 1
                    assert ref.kind == "gate" and module_for(ref).name == "test-run", (domain, strategy, t)
                if t.risk_mitigation:
                    assert ref.kind == declared_kind(t.description) == "mitigation"
    assert gates > 0


def test_explicit_modules_still_win_over_a_declared_kind():
    ref = task_ref({"plan_id": "p", "task": {"task_id": "t", "name": "Crunch", "phase": "build",
                                             "description": "Crunch (deploy) for goal 'x'\nwasm: compute 10 1"}})
    assert (ref.kind, ref.module, ref.args) == ("deploy", "compute", ("10", "1"))
    # an explicit task declares no kind: its words decide, as before
    assert task_kind({"name": "Run tests", "description": "Run tests (explicit) for goal 'x'"}) == "verify"
