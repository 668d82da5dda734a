"""The estimator's training history (triton_models.history.HISTORY_SQL) read from chdb filled by
the ClickHouse sink's own code (rows_for): first plan versions' tasks with their last
COMPLETED/FAILED feedback, and nothing else."""
from __future__ import annotations

import pytest

from tests import sinks_fixtures as F
from topics import registry as T

pytestmark = [pytest.mark.integration]


def _records():
    g1, g2 = F.goal("g1"), F.goal("g2", domain="data_ml")
    p1 = F.plan("p1", "g1", tasks=[F.task("t1", 0, 10), F.task("t2", 10, 20, deps=["t1"], caps=("qa", "python")),
                                   F.task("t3", 30, 4, deps=["t2"])])
    p2 = F.plan("p2", "g2", tasks=[F.task("a", 0, 5, caps=()), F.task("b", 5, 2)])
    later = F.plan_update(p1, version=2)
    later["plan"]["tasks"] = [F.task("t9", 0, 1)]           # only in v2: not the planner's first view
    fb = F.feedback
    recs = [(T.GOALS_CREATED.name, g1), (T.GOALS_CREATED.name, g2), (T.PLANS_CREATED.name, p1),
            (T.PLANS_CREATED.name, p2), (T.PLANS_UPDATED.name, later),
            (T.EXECUTION_FEEDBACK.name, fb("p1", "t1", "STARTED", at_ms=F.T0 + 100)),
            (T.EXECUTION_FEEDBACK.name, fb("p1", "t1", "COMPLETED", 12.0, at_ms=F.T0 + 200)),
            (T.EXECUTION_FEEDBACK.name, fb("p1", "t2", "FAILED", 1.0, at_ms=F.T0 + 300)),
            (T.EXECUTION_FEEDBACK.name, fb("p1", "t2", "COMPLETED", 18.0, at_ms=F.T0 + 400)),   # the retry's: last
            (T.EXECUTION_FEEDBACK.name, fb("p1", "t3", "STARTED", at_ms=F.T0 + 500)),           # unfinished
            (T.EXECUTION_FEEDBACK.name, fb("p1", "t9", "COMPLETED", 1.0, at_ms=F.T0 + 500)),    # v2 task
            (T.EXECUTION_FEEDBACK.name, fb("p2", "a", "FAILED", 3.0, at_ms=F.T0 + 600)),
            (T.EXECUTION_FEEDBACK.name, fb("p2", "b", "COMPLETED", None, at_ms=F.T0 + 700))]  # no hours
    return F.sink_records(recs)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # delivered twice (at least once): FINAL and argMax must not double anything
    s = F.filled_store(tmp_path_factory.mktemp("history"), _records(), deliveries=2)
    yield s
    s.close()


def test_history_is_first_versions_tasks_with_their_last_outcome(store):
    from inference.features import TaskFeatures
    from triton_models import history
    got = sorted(history.from_clickhouse(store), key=lambda e: (e.goal_id, e.task.name))
    assert [(e.goal_id, e.task.name, e.actual_hours, e.failed) for e in got] == [
        ("g1", "Task t1", 12.0, False), ("g1", "Task t2", 18.0, False), ("g2", "Task a", 3.0, True)]
    assert got[1].task == TaskFeatures(name="Task t2", kind="build", domain="software", template_hours=20.0,
                                       optimistic=16.0, pessimistic=30.0, executor="qa", n_deps=1)
    assert got[2].task.domain == "data_ml" and got[2].task.executor == ""
