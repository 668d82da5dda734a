"""The executor as a resource and its emergency-stop state, without a broker: its announcement
is a valid resources.availability record that the planner's allocation picks for a task it
can run, and control.commands fold into what blocks a plan."""
from __future__ import annotations

import time

from executor.service import ExecutorConfig, Stops, announcement
from processors.allocation import choose_resource, demand
from processors.config import PlanningConfig
from processors.execution import task_ref
from processors.model import Estimate, Task
from streams import codec
from topics import registry as T
from topics.serde import serde


def _cfg(**kw) -> ExecutorConfig:
    return ExecutorConfig(bootstrap="unused:1", executor_id="ex-1", slots=3, capabilities=("wasm", "build"),
                          capacities={"cpu": 8.0}, hourly_rate=2.5, **kw)


def test_announcement_is_a_v2_resource_the_allocator_picks_for_what_it_can_run():
    s = serde(T.RESOURCES_AVAILABILITY.name)
    rec = s.decode(s.encode(announcement(_cfg(), free_slots=1), strict=True))
    assert rec["kind"] == "agents" and rec["capacities"] == {"cpu": 8.0, "agents": 3.0}
    assert rec["free"] == {"cpu": 8.0, "agents": 1.0} and rec["health"] == "HEALTHY"
    assert abs(rec["heartbeat_ms"] - time.time() * 1000) < 5000 and rec["hourly_rate"] == 2.5
    r = codec.resource_from_record(rec)
    now = rec["heartbeat_ms"]
    build = Task("t", "build it", Estimate(1, 1, 1), capabilities=("build",))
    assert demand(build, r) == {"agents": 1.0}          # a task naming no units takes one slot
    assert choose_resource(build, [r], now, {}, PlanningConfig()) == r
    heavy = Task("h", "build it", Estimate(1, 1, 1), resources={"cpu": 2, "agents": 1}, capabilities=("build",))
    assert choose_resource(heavy, [r], now, {}, PlanningConfig()) == r
    assert choose_resource(Task("q", "qa", Estimate(1, 1, 1), capabilities=("qa",)), [r], now, {},
                           PlanningConfig()) is None      # a capability it lacks
    busy = codec.resource_from_record(s.decode(s.encode(announcement(_cfg(), free_slots=0))))
    assert choose_resource(build, [busy], now, {}, PlanningConfig()) is None
    gone = codec.resource_from_record(announcement(_cfg(), available=False))
    assert not gone.healthy


def test_own_consumer_group_per_executor_unless_a_pool_group_is_named():
    assert _cfg().consumer_group == "chimera-executor.ex-1"
    assert _cfg(group="pool-a").consumer_group == "pool-a"


def test_a_pool_member_keeps_its_own_group_adds_the_pools_and_announces_its_pool():
    """--pool: its own group still carries what is allocated to it by id; the pool's shared
    group carries what is allocated to the pool; its record says which pool it is in (a
    capability, so a task may require the pool and the allocator honours it)."""
    cfg = _cfg(pool="gpu-a")
    assert (cfg.consumer_group, cfg.pool_group) == ("chimera-executor.ex-1", "chimera-executor-pool.gpu-a")
    assert _cfg().pool_group is None
    s = serde(T.RESOURCES_AVAILABILITY.name)
    rec = s.decode(s.encode(announcement(cfg), strict=True))
    assert rec["resource_id"] == "ex-1" and rec["capabilities"] == ["wasm", "build", "pool:gpu-a"]
    r = codec.resource_from_record(rec)
    pinned = Task("t", "build it", Estimate(1, 1, 1), capabilities=("build", "pool:gpu-a"))
    assert choose_resource(pinned, [r], rec["heartbeat_ms"], {}, PlanningConfig()) == r
    other = codec.resource_from_record(announcement(_cfg(pool="cpu-b")))
    assert choose_resource(pinned, [other], rec["heartbeat_ms"], {}, PlanningConfig()) is None


def test_a_missing_capability_is_refused_whoever_the_task_was_for():
    from executor.service import missing_capabilities
    ref = lambda caps, to=None: task_ref({"plan_id": "p", "assigned_to": to, "task": {  # noqa: E731
        "task_id": "t", "name": "x", "capabilities": caps}})
    cfg = _cfg(pool="gpu-a")
    assert missing_capabilities(ref(["build", "pool:gpu-a"], "gpu-a"), cfg) == []
    assert missing_capabilities(ref(["gpu", "build"]), cfg) == ["gpu"]        # unassigned: checked too
    assert missing_capabilities(ref(["gpu"], "gpu-a"), cfg) == ["gpu"]        # the pool's: checked too
    assert missing_capabilities(ref(["wasm:compute"], "ex-1"), cfg) == []     # names a module, not a skill


def test_control_commands_fold_into_what_blocks_a_plan():
    st = Stops()
    c = lambda cmd, pid=None, by="ops": {"command": cmd, "plan_id": pid, "issued_by": by, "reason": ""}  # noqa: E731
    assert st.apply(c("STOP", "p1")) == ("stop by ops", "p1")
    assert st.blocks("p1") and not st.blocks("p2")
    assert st.apply(c("STOP")) == ("stop by ops", None)
    assert st.blocks("p2")
    assert st.apply(c("RESUME")) is None and not st.blocks("p2") and st.blocks("p1")
    st.apply(c("RESUME", "p1"))
    assert not st.blocks("p1")
    assert st.apply(c("CANCEL", "p3")) == ("cancel by ops", "p3")
    st.apply(c("RESUME", "p3"))
    assert st.blocks("p3"), "a cancelled plan stays cancelled"


def test_deadline_and_explicit_module_from_a_goal_task_name():
    a = {"plan_id": "p", "attempt": 2, "assigned_to": "ex-1", "deadline_ms": 123,
         "task": {"task_id": "t", "name": "wasm: compute 1000 3", "description": "wasm: compute 1000 3 (explicit)"}}
    ref = task_ref(a)
    assert (ref.module, ref.args, ref.deadline_ms, ref.attempt) == ("compute", ("1000", "3"), 123, 2)


def test_finished_tasks_kept_are_bounded_and_a_revoked_uncommitted_one_is_forgotten(tmp_path):
    """The service keeps the last `recent_tasks` finished (plan, task, attempt) tokens, to skip a
    duplicate assignment, and no more; a task that finished but was not committed when its
    partition was revoked is forgotten, so that if the partition comes back it runs (and reports)
    again instead of being skipped with its feedback lost. No broker: nothing here reaches Kafka."""
    import threading
    from collections import OrderedDict

    from executor.service import Executor, _Entry
    ex = Executor(ExecutorConfig("127.0.0.1:9", executor_id="ex-mem", work_root=tmp_path, control=False,
                                 recent_tasks=3))
    try:
        lane = ex.lanes[0]
        key = (lane.index, T.TASKS_ASSIGNED.name, 0)
        refs = [task_ref({"plan_id": "plan-m", "attempt": 1, "task": {"task_id": f"t{i}", "name": "noop"}})
                for i in range(7)]
        ex.inflight[key] = OrderedDict()
        for i in range(5):
            ex._finish(key, ex.inflight[key].setdefault(i, _Entry(i, ref=refs[i])), refs[i], None, "trap: test")
        assert list(ex._recent) == [("plan-m", f"t{i}", 1) for i in (2, 3, 4)]
        running = _Entry(5, ref=refs[5], cancel=threading.Event())
        ex.inflight[key] = OrderedDict({5: running, 6: _Entry(6, ref=refs[6])})
        ex._finish(key, ex.inflight[key][6], refs[6], None, "trap: test")   # done behind a running one
        assert ("plan-m", "t6", 1) in ex._recent
        ex._on_revoke(lane, lane.consumer, [__import__("confluent_kafka").TopicPartition(*key[1:])])
        assert ("plan-m", "t6", 1) not in ex._recent and ("plan-m", "t4", 1) in ex._recent
        assert running.cancel.is_set() and key not in ex.inflight
    finally:
        ex.sandbox.close()
        for lane in ex.lanes:
            lane.consumer.close()
