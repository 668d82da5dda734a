"""Shared fixtures: a real Kafka broker for the session, real Faust workers per test.

Every service is started on free loopback ports by the project's own launchers and
stopped at the end, even when a test fails.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_ids = itertools.count()


@pytest.fixture(scope="session")
def kafka_bootstrap():
    """KAFKA_BOOTSTRAP when set, else a real single-node KRaft broker for this session."""
    from streams.services import broker

    with broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def _resource_ledger(kafka_bootstrap):
    from tests.kafka_helpers import ResourceLedger
    ledger = ResourceLedger(kafka_bootstrap)
    yield ledger
    ledger.close()


@pytest.fixture(autouse=True)
def _no_resource_left_behind(request):
    """Every test on the session broker leaves resources.availability as it found it: a
    resource left there makes every later plan wait for an allocation nobody answers. A test
    that leaves one fails here, naming it, and the resource is tombstoned so the rest of the
    session is not misled by it."""
    if "kafka_bootstrap" not in request.fixturenames:
        yield
        return
    ledger = request.getfixturevalue("_resource_ledger")
    before = ledger.now()
    yield
    left = ledger.now() - before
    if left:
        from tests.executor_helpers import tombstone
        tombstone(request.getfixturevalue("kafka_bootstrap"), left)
        pytest.fail(f"resources left on the shared resources.availability (now tombstoned): {sorted(left)}")


@pytest.fixture
def withdraw(kafka_bootstrap):
    """Resource ids a test announces on the shared broker: tombstoned when it ends."""
    ids: list[str] = []
    yield ids
    if ids:
        from tests.executor_helpers import tombstone
        tombstone(kafka_bootstrap, ids)


async def fresh_group(bootstrap: str, group: str) -> None:
    from streams import client
    from streams.planner import SOURCES
    from topics import registry as T
    await client.commit_at_end(bootstrap, group, [t for t in SOURCES if t != T.RESOURCES_AVAILABILITY.name])


@pytest.fixture
def planner_stack(kafka_bootstrap, tmp_path):
    """A fresh app id (own consumer group and state) and topics; yields a factory for workers."""
    from streams.services import Worker
    from topics.admin import create_topics

    asyncio.run(create_topics(kafka_bootstrap))
    app_id = f"chimera-test-{os.getpid()}-{next(_ids)}"
    workers: list[Worker] = []
    started: set[str] = set()

    def reserve(group: str = "") -> None:
        """Fix where a group starts: the end of what the planner consumes now (a worker started
        later for that group reads everything produced from here on)."""
        if app_id + group not in started:
            started.add(app_id + group)
            asyncio.run(fresh_group(kafka_bootstrap, app_id + group))

    def start(group: str = "", **env) -> Worker:
        """A worker; workers with another `group` have their own consumer group and state. A new
        group starts at the end of what the planner consumes (resources excepted: they are the
        global view), so earlier tests' records neither slow it down nor reach its outputs:
        records produced before the group's first worker starts are not read, unless the test
        called `reserve(group)` before producing them."""
        reserve(group)
        w = Worker(kafka_bootstrap, env={k: str(v) for k, v in env.items()}, app_id=app_id + group,
                   log_path=tmp_path / f"worker-{len(workers)}.log")
        workers.append(w.start())
        return w

    start.reserve = reserve
    yield start
    for w in workers:
        w.stop()
    for w in workers:
        if w.log_path.exists():
            print(f"--- {w.log_path.name} (tail) ---\n{w.log_tail(60)}")


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory):
    """A serving repository (the committed models copied into a build folder) for the session."""
    from triton_models import repository
    return repository.prepare(tmp_path_factory.mktemp("triton-repo"))


@pytest.fixture(scope="session")
def triton_server(triton_repository, tmp_path_factory):
    """A real tritonserver (CPU, Python backend) with the embedder and estimator loaded, on free
    loopback ports (a container where a Docker engine answers), stopped at the end of the session. TRITON_URL skips the start (external
    server; its repository must hold the same models)."""
    from infra import containers
    if os.environ.get("TRITON_URL"):
        yield type("External", (), {"url": os.environ["TRITON_URL"], "repository": triton_repository})()
        return
    with containers.triton(triton_repository, models=("embedder", "estimator"),
                           log_dir=tmp_path_factory.mktemp("triton-log")) as server:
        yield server


@pytest.fixture
def stores():
    """ClickHouse and Chroma servers in containers where a Docker engine answers, their URLs in
    CLICKHOUSE_URL / CHROMA_URL for the test (and the sinks and workers it starts); locally
    nothing: the sinks run chdb and Chroma in process on the test's own folders."""
    from infra import containers
    with containers.stores() as urls:
        yield urls
