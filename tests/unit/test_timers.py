"""The timers' watchlist: what is due within the horizon, who uses a resource, who is held."""
from streams.timers import HORIZON_MS, RETICK_MS, Watch, Watchlist, watch_of_header


def test_due_plans_come_out_once_then_again_after_retick_unless_their_state_moves():
    wl = Watchlist()
    wl.set("a", Watch(due_ms=100), 0)
    wl.set("b", Watch(due_ms=5_000), 0)
    assert wl.due(99) == []
    assert wl.due(100) == ["a"]
    assert wl.due(101) == []                       # not again until the retick
    assert wl.due(100 + RETICK_MS) == ["a"]        # its state did not move: looked at again
    wl.set("a", Watch(due_ms=10_000), 0)           # it moved: the old entries are stale
    assert wl.due(5_000) == ["b"]
    assert sorted(wl.due(10_000)) == ["a", "b"]    # b did not move either: reticked


def test_a_plan_that_needs_no_timer_leaves_the_list():
    wl = Watchlist()
    wl.set("a", Watch(due_ms=100, resources=("r1",), held=True), 0)
    wl.set("a", None, 0)
    assert len(wl) == 0 and wl.due(10**9) == [] and wl.using(["r1"]) == {} and wl.held() == []


def test_far_due_times_and_finished_plans_are_left_to_the_sweep():
    wl = Watchlist()
    wl.set("far", Watch(due_ms=HORIZON_MS + 1), 0)
    wl.set("done", watch_of_header({"n": None, "u": [], "hd": False, "f": 1234}), 0)
    assert len(wl) == 0                            # memory holds only what is near
    wl.set("far", Watch(due_ms=HORIZON_MS + 1), 2)  # the sweep reads it again later: now near
    assert wl.due(HORIZON_MS + 1) == ["far"]
    wl.set("busy", Watch(due_ms=10 * HORIZON_MS, resources=("r1",)), 0)
    assert wl.using(["r1"]) == {"busy": ["r1"]} and "busy" not in wl.due(5 * HORIZON_MS)


def test_resources_and_held_follow_the_latest_state():
    wl = Watchlist()
    wl.set("a", Watch(resources=("r1", "r2")), 0)
    wl.set("b", Watch(resources=("r2",), held=True), 0)
    assert {k: sorted(v) for k, v in wl.using(["r2"]).items()} == {"a": ["r2"], "b": ["r2"]}
    wl.set("a", Watch(resources=("r3",)), 0)
    assert wl.using(["r1", "r2"]) == {"b": ["r2"]}
    assert sorted(wl.resources()) == ["r2", "r3"]
    assert wl.held() == ["b"]


def test_stale_heap_entries_do_not_grow_without_bound():
    wl = Watchlist()
    for i in range(20_000):
        wl.set("a", Watch(due_ms=10_000 + i), 0)
    assert len(wl._due) <= 4 * len(wl) + 1001
    assert wl.due(10**9) == ["a"]
