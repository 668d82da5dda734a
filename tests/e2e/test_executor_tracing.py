"""The executor continues an assignment's W3C trace on the feedback it commits."""
from __future__ import annotations

import asyncio
import os
import time

import pytest
from confluent_kafka import Consumer, Producer

from executor.build import toolchain_missing
from processors import ids
from tests.e2e.test_executor import _assignment, _task
from tests.executor_helpers import Executors, ends
from topics import registry as T
from topics.serde import serde
from topics.tracing import outgoing, trace_id_of

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(toolchain_missing() is not None and not os.environ.get("CI"),
                                 reason=f"WASI toolchain: {toolchain_missing()} (run `make modules`)")]


def test_feedback_carries_the_assignments_trace(kafka_bootstrap, tmp_path):
    from streams import client
    from topics.admin import create_topics
    asyncio.run(create_topics(kafka_bootstrap))
    group = f"executors-trace-{os.getpid()}"
    asyncio.run(client.commit_at_end(kafka_bootstrap, group, [T.TASKS_ASSIGNED.name]))
    start = ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name)
    plan = ids.plan_id(f"exec-trace-{os.getpid()}-{time.time_ns()}")
    headers, trace_id = outgoing(None, "test.assign")
    factory = Executors(kafka_bootstrap, tmp_path)
    try:
        factory("exec-trace", 1, args=("--group", group, "--unassigned"))
        p = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
        p.produce(T.TASKS_ASSIGNED.name, key=plan.encode(),
                  value=serde(T.TASKS_ASSIGNED.name).encode(_assignment(plan, _task("t", "Run the tests", phase="test"))),
                  headers=[(k, v.encode()) for k, v in headers.items()])
        assert p.flush(30) == 0
        c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"trace-fb-{os.getpid()}",
                      "enable.auto.commit": False, "isolation.level": "read_committed"})
        c.assign(start)
        s = serde(T.EXECUTION_FEEDBACK.name)
        found = None
        deadline = time.monotonic() + 90
        while found is None and time.monotonic() < deadline:
            for m in c.consume(100, 0.5):
                if m.error() or m.key() != plan.encode():
                    continue
                if s.decode(m.value())["status"] == "COMPLETED":
                    found = dict(m.headers() or [])
        c.close()
    finally:
        factory.close()
    assert found is not None, "no COMPLETED feedback"
    assert trace_id_of(found.get("traceparent", b"").decode()) == trace_id
