"""The planner's memory look-up (streams/memory.py) against the Chroma sink's real recall
endpoint (sinks/chroma.py, real Chroma and MiniLM), and against a slow endpoint."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams import codec
from streams.memory import MemoryLookup
from streams.settings import MemorySettings
from tests import sinks_fixtures as F

pytestmark = [pytest.mark.integration]


def _history(memory, prefix: str) -> None:
    """One completed billing-API goal: t1 planned 10 h took 15 h, t2 planned 20 h reported nothing."""
    g = F.goal(f"{prefix}-g1", title="Launch billing API", objectives=("Design", "Build"))
    p = F.plan(f"{prefix}-p1", g["goal_id"], tasks=[F.task("t1", 0, 10, resources={"cpu": 1.0}),
                                                    F.task("t2", 10, 20, deps=["t1"], resources={"cpu": 1.0})])
    fb = [F.feedback(p["plan_id"], "t1", "COMPLETED", 15.0), F.feedback(p["plan_id"], "t2", "COMPLETED", None)]
    memory.apply([g], [p], fb)


def test_planner_reuses_a_completed_episode_through_the_sinks_endpoint(stores, tmp_path):
    from sinks.chroma import ChromaSink

    folder = tmp_path / "chroma"
    sink = ChromaSink(folder, serve=True)
    sink.setup()
    try:
        prefix = F.unique("lookup")
        _history(sink.memory, prefix)
        assert (folder / "memory.json").exists()
        lookup = MemoryLookup.from_settings(MemorySettings(dir=str(folder), timeout_s=30.0))
        assert lookup is not None
        record = F.goal("new-1", title="Launch the billing API", objectives=("Design", "Build"))
        reuse = asyncio.run(lookup.reuse(codec.goal_from_record(record), record))
        assert reuse is not None and reuse.use.source_goal_id == f"{prefix}-g1"
        assert reuse.use.similarity >= 0.8 and reuse.use.tasks_reused == 2 and reuse.use.tasks_observed == 1
        # t1: its observed 15 h; t2: no actual reported -> 20 h x the episode's factor (15 / 10)
        assert {s.task_id: s.duration_hours for s in reuse.goal.tasks} == {"t1": 15.0, "t2": 30.0}
        assert reuse.goal.tasks[1].depends_on == ("t1",) and reuse.goal.tasks[0].resources == {"cpu": 1.0}
        novel = F.goal("new-2", title="Plant tomatoes in the garden", domain="garden", objectives=("Dig", "Water"))
        assert asyncio.run(lookup.reuse(codec.goal_from_record(novel), novel)) is None
    finally:
        sink.close()
    # the owner is gone: its marker too, and the look-up answers None at once
    assert not (folder / "memory.json").exists()
    assert asyncio.run(lookup.recall(record)) is None


def test_no_chroma_folder_means_no_memory(tmp_path):
    assert MemoryLookup.from_settings(MemorySettings(dir=str(tmp_path / "absent"))) is None
    assert MemoryLookup.from_settings(MemorySettings(dir=str(tmp_path), enabled=False)) is None


@pytest.fixture
def slow_endpoint():
    """A recall endpoint that answers after 3 s."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(3.0)
            out = json.dumps({"episode": None}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/recall"
    httpd.shutdown()
    httpd.server_close()


def test_a_slow_memory_times_out_without_blocking_the_event_loop(slow_endpoint, tmp_path):
    lookup = MemoryLookup(MemorySettings(dir=str(tmp_path), url=slow_endpoint, timeout_s=0.3))
    record = F.goal("slow-1")

    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        first = await lookup.recall(record)            # times out
        during = ticks
        second = await lookup.recall(record)           # the first is still running: skipped, not queued
        t.cancel()
        return first, during, second

    first, during, second = asyncio.run(scenario())
    assert first is None and second is None
    assert during >= 5, f"the event loop turned only {during} times during a 0.3 s look-up"
    from streams.memory import LOOKUPS
    assert LOOKUPS.labels("timeout")._value.get() >= 1 and LOOKUPS.labels("busy")._value.get() >= 1
    lookup.close()
