"""An executor left running through a restart of its broker takes work again once the broker
is back: a supervisor must not have to restart it (seen: it read nothing for minutes)."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from executor.build import toolchain_missing
from infra.kafka import KafkaBroker
from processors import ids
from tests.e2e.test_executor import _assignment, _produce, _task
from tests.executor_helpers import Executors, Feedback, ends
from tests.kafka_helpers import free_port
from topics import registry as T

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(toolchain_missing() is not None and not os.environ.get("CI"),
                                 reason=f"WASI toolchain: {toolchain_missing()} (run `make modules`)")]


def _ends_when_led(bootstrap: str) -> list:
    """Feedback's ends, once a restarted broker leads its partitions again."""
    from confluent_kafka import KafkaException
    deadline = time.monotonic() + 60
    while True:
        try:
            return ends(bootstrap, T.EXECUTION_FEEDBACK.name)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _run_one(bootstrap: str, plan: str, task_id: str, timeout: float) -> tuple[float, list]:
    fb = Feedback(bootstrap, _ends_when_led(bootstrap), {plan})
    try:
        t0 = time.monotonic()
        _produce(bootstrap, [_assignment(plan, _task(task_id, "Validate the input data", phase="data"))])
        fb.poll_until(lambda rs: any(r["task_id"] == task_id and r["status"] == "COMPLETED" for r in rs), timeout)
        return time.monotonic() - t0, fb.records
    finally:
        fb.close()


def test_an_executor_takes_work_again_after_its_broker_restarts(tmp_path):
    from streams import client
    from topics.admin import create_topics
    port, controller = free_port(), free_port()
    broker = KafkaBroker(data_dir=tmp_path / "kafka", port=port, controller_port=controller).start()
    factory = None
    try:
        bs = broker.bootstrap
        asyncio.run(create_topics(bs))
        group = "executors-restart"
        asyncio.run(client.commit_at_end(bs, group, [T.TASKS_ASSIGNED.name]))
        factory = Executors(bs, tmp_path)
        factory("exec-restart", 2, args=("--group", group, "--unassigned"))
        before, recs = _run_one(bs, ids.plan_id("restart-before"), "before", 120)
        assert any(r["status"] == "COMPLETED" for r in recs), "the executor never ran the first task"

        broker.stop()
        time.sleep(5)   # the executor notices the broker is gone
        broker = KafkaBroker(data_dir=tmp_path / "kafka", port=port, controller_port=controller).start()
        took, recs = _run_one(bs, ids.plan_id("restart-after"), "after", 180)
        assert any(r["status"] == "COMPLETED" for r in recs), \
            f"no COMPLETED within 180 s of the broker's return: {[r['status'] for r in recs]}"
        print(f"first task {before:.1f} s; after the restart {took:.1f} s")
    finally:
        if factory is not None:
            factory.close()   # prints the executor's log
        broker.stop()
