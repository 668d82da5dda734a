"""The timers' watchlist: what is due, who uses a resource, who is held, what finished."""
from streams.timers import RETICK_MS, Watch, Watchlist, watch_of_header


def test_due_plans_come_out_once_then_again_after_retick_unless_their_state_moves():
    wl = Watchlist()
    wl.set("a", Watch(due_ms=100))
    wl.set("b", Watch(due_ms=5_000))
    assert wl.due(99) == []
    assert wl.due(100) == ["a"]
    assert wl.due(101) == []                       # not again until the retick
    assert wl.due(100 + RETICK_MS) == ["a"]        # its state did not move: looked at again
    wl.set("a", Watch(due_ms=10_000))              # it moved: the old entries are stale
    assert wl.due(5_000) == ["b"]
    assert sorted(wl.due(10_000)) == ["a", "b"]    # b did not move either: reticked


def test_a_plan_that_needs_no_timer_leaves_the_list():
    wl = Watchlist()
    wl.set("a", Watch(due_ms=100, resources=("r1",), held=True))
    wl.set("a", None)
    assert len(wl) == 0 and wl.due(10**9) == [] and wl.using(["r1"]) == {} and wl.held() == []


def test_resources_and_held_follow_the_latest_state():
    wl = Watchlist()
    wl.set("a", Watch(resources=("r1", "r2")))
    wl.set("b", Watch(resources=("r2",), held=True))
    assert {k: sorted(v) for k, v in wl.using(["r2"]).items()} == {"a": ["r2"], "b": ["r2"]}
    wl.set("a", Watch(resources=("r3",)))
    assert wl.using(["r1", "r2"]) == {"b": ["r2"]}
    assert sorted(wl.resources()) == ["r2", "r3"]
    assert wl.held() == ["b"]


def test_finished_plans_are_listed_for_expiry_and_headers_read_the_same():
    wl = Watchlist()
    wl.set("done", watch_of_header({"n": None, "u": [], "hd": False, "f": 1234}))
    wl.set("idle", watch_of_header({"n": None, "u": [], "hd": False, "f": None}))
    assert list(wl.finished()) == [("done", 1234)]
    assert len(wl) == 1


def test_stale_heap_entries_do_not_grow_without_bound():
    wl = Watchlist()
    for i in range(20_000):
        wl.set("a", Watch(due_ms=10_000 + i))
    assert len(wl._due) <= 4 * len(wl) + 1001
    assert wl.due(10**9) == ["a"]
