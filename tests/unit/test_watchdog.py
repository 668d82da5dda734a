"""The watchdog's health rule, on a fake clock (its Faust wiring runs in tests/e2e)."""
from streams.watchdog import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lag_without_progress_for_the_stall_time_is_unhealthy():
    clock = Clock()
    p = Progress(stall_s=10, clock=clock)
    assert p.observe({"t0": (5, 9)}) is None      # the first sample: nothing to compare with
    clock.now = 1
    assert p.observe({"t0": (5, 9)}) is None      # no progress since: the stall starts
    clock.now = 10
    assert p.observe({"t0": (5, 9)}) is None
    clock.now = 11
    why = p.observe({"t0": (5, 9)})
    assert why and "no progress" in why and "t0" in why


def test_progress_or_no_lag_is_healthy():
    clock = Clock()
    p = Progress(stall_s=10, clock=clock)
    for t in range(0, 60, 5):
        clock.now = t
        assert p.observe({"t0": (t, 100)}) is None          # moving
    for t in range(60, 120, 5):
        clock.now = t
        assert p.observe({"t0": (100, 100), "t1": (None, None)}) is None   # caught up, idle


def test_no_partition_at_all_for_the_stall_time_is_unhealthy():
    clock = Clock()
    p = Progress(stall_s=10, clock=clock)
    assert p.observe({}) is None
    clock.now = 11
    assert "owns no partition" in p.observe({})
    clock.now = 12
    assert p.observe({"t0": (1, 1)}) is None
