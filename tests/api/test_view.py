"""The API's own view of the plan topics, on the real broker."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import Producer

pytestmark = [pytest.mark.integration]


def test_the_view_catches_up_and_its_lag_comes_from_the_fetches():
    """Records it cannot decode and tombstones are read past (counted, not stored); once at the
    end its lag is 0, and records produced afterwards are followed (the lag is measured from the
    high watermarks the fetches return, never from per-partition broker requests, which held
    the loop for 15-30 s on a busy broker). On its own broker: the session's tests read the plan
    topics from their beginning and expect plans there, not garbage and tombstones."""
    from api.view import View
    from infra.kafka import KafkaBroker
    from topics import registry as T
    from topics.admin import create_topics
    with KafkaBroker() as broker:
        bootstrap = broker.bootstrap
        asyncio.run(create_topics(bootstrap))
        run = uuid.uuid4().hex[:8]
        p = Producer({"bootstrap.servers": bootstrap})
        for i in range(300):
            p.produce(T.PLANS_UPDATED.name, key=f"{run}-{i}".encode(), value=b"\x00garbage")
            p.produce(T.PLANS_CREATED.name, key=f"{run}-{i}".encode(), value=None)
        assert p.flush(30) == 0
        view = View(bootstrap).start()
        try:
            assert view.ready.wait(120), f"not caught up: {view.records} records, lag {view.lag}, {view.error}"
            seen, errors = view.records, view.decode_errors
            assert (seen, errors) == (600, 300)  # its own broker: exactly what was produced
            for i in range(50):
                p.produce(T.PLANS_UPDATED.name, key=f"{run}-late-{i}".encode(), value=b"\x00late")
            assert p.flush(30) == 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (view.decode_errors >= errors + 50 and view.lag == 0):
                time.sleep(0.2)
            assert view.decode_errors >= errors + 50, "records produced after the catch-up are followed"
            assert view.lag == 0, view.lag
        finally:
            view.stop()
