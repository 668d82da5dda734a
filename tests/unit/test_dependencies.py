import pytest

from processors.dependencies import check_dependencies, check_specs, predecessors_closure
from processors.model import Estimate, PlanningError, Task, TaskSpec


def t(tid, *deps, est=(1.0, 2.0, 3.0), **kw):
    return Task(task_id=tid, name=tid, estimate=Estimate(*est), depends_on=deps, **kw)


def reason(fn, *args):
    with pytest.raises(PlanningError) as e:
        fn(*args)
    return e.value


def test_topological_order_and_stability():
    tasks = [t("c", "a", "b"), t("a"), t("b", "a"), t("d")]
    order = [x.task_id for x in check_dependencies(tasks)]
    assert order.index("a") < order.index("b") < order.index("c")
    assert order == ["a", "b", "c", "d"]  # ready tasks are taken in input order
    # already-topological input keeps its order
    ok = [t("a"), t("b", "a"), t("x"), t("c", "b")]
    assert [x.task_id for x in check_dependencies(ok)] == ["a", "b", "x", "c"]


def test_cycle_detail_names_the_cycle():
    e = reason(check_dependencies, [t("a", "b"), t("b", "a")])
    assert e.reason == "cyclic_dependency"
    assert e.detail in ("a -> b -> a", "b -> a -> b")


def test_longer_cycle_with_tail():
    e = reason(check_dependencies, [t("s"), t("x", "s", "z"), t("y", "x"), t("z", "y"), t("w", "z")])
    assert e.reason == "cyclic_dependency"
    nodes = e.detail.split(" -> ")
    assert nodes[0] == nodes[-1] and set(nodes) == {"x", "y", "z"}
    # each arrow is a real dependency edge: a -> b means b depends on a
    deps = {"x": {"s", "z"}, "y": {"x"}, "z": {"y"}}
    for a, b in zip(nodes, nodes[1:]):
        assert a in deps[b]


def test_self_dependency_is_a_cycle():
    e = reason(check_dependencies, [t("a", "a")])
    assert e.reason == "cyclic_dependency" and e.detail == "a -> a"


def test_dangling_names_task_and_missing_id():
    e = reason(check_dependencies, [t("a"), t("b", "ghost")])
    assert e.reason == "dangling_dependency"
    assert "'b'" in e.detail and "'ghost'" in e.detail


def test_duplicate_task():
    assert reason(check_dependencies, [t("a"), t("a")]).reason == "duplicate_task"


def test_negative_and_invalid_estimates():
    assert reason(check_dependencies, [t("a", est=(-1.0, 1.0, 2.0))]).reason == "negative_duration"
    assert reason(check_dependencies, [t("a", est=(3.0, 2.0, 4.0))]).reason == "invalid_estimate"
    assert reason(check_dependencies, [t("a", est=(1.0, 5.0, 4.0))]).reason == "invalid_estimate"
    assert reason(check_dependencies, [t("a", est=(1.0, float("nan"), 4.0))]).reason == "invalid_estimate"


def test_negative_resource_rejected():
    assert reason(check_dependencies, [t("a", resources={"cpu": -1.0})]).reason == "invalid_resources"


def test_specs_same_reasons():
    ok = check_specs([TaskSpec("b", "B", 1.0, ("a",)), TaskSpec("a", "A", 2.0)])
    assert [s.task_id for s in ok] == ["a", "b"]
    assert reason(check_specs, [TaskSpec("a", "A", -2.0)]).reason == "negative_duration"
    assert reason(check_specs, [TaskSpec("a", "A", 1.0, ("zz",))]).reason == "dangling_dependency"
    assert reason(check_specs, [TaskSpec("a", "A", 1.0), TaskSpec("a", "A2", 1.0)]).reason == "duplicate_task"
    e = reason(check_specs, [TaskSpec("a", "A", 1.0, ("b",)), TaskSpec("b", "B", 1.0, ("a",))])
    assert e.reason == "cyclic_dependency" and "a" in e.detail and "b" in e.detail


def test_zero_duration_is_fine():
    assert len(check_specs([TaskSpec("m", "milestone", 0.0)])) == 1
    assert len(check_dependencies([t("m", est=(0.0, 0.0, 0.0))])) == 1


def test_predecessors_closure():
    cl = predecessors_closure([t("a"), t("b", "a"), t("c", "b"), t("d")])
    assert cl["c"] == {"a", "b"} and cl["d"] == frozenset()
