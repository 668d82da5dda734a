"""The baseline for bench/pipeline.py (and bench/feedback.py): a raw Faust agent that copies
goals.created (BENCH_PASSTHROUGH_IN) bytes to another topic, with the same app settings as the planner. Run as a worker process.

It logs at INFO like `python -m streams.worker`: at WARN and above Faust's terminal spinner sets
the root logger to DEBUG, so every aiokafka/Faust debug call builds a LogRecord (~5% of a
worker's CPU), which would handicap the baseline."""
from __future__ import annotations

import os
import sys

import faust

OUT = os.environ.get("BENCH_PASSTHROUGH_OUT", "bench.passthrough.out")
IN = os.environ.get("BENCH_PASSTHROUGH_IN", "goals.created")   # bench/feedback.py copies execution.feedback
app = faust.App(os.environ.get("CHIMERA_APP_ID", "bench-passthrough"),
                broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP']}", store="memory://",
                topic_disable_leader=True, broker_session_timeout=6.0, broker_heartbeat_interval=1.0,
                consumer_auto_offset_reset="earliest", web_enabled=False,
                datadir=os.environ.get("CHIMERA_DATA_DIR", "/tmp/chimera-bench-faust"))
source = app.topic(IN, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
sink = app.topic(OUT, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def passthrough(stream):
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "info", "--without-web"]
    app.main()
