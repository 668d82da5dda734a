"""Health over HTTP on a broker of its own, each dependency really stopped and started again:
the broker (every component red with "broker unreachable", green after), the planner worker
(the decomposer red on consumer lag, green once it consumed it), an executor process and a
ClickHouse sink (red on their lag while stopped, green after), a Chroma server as the sinks'
store (red "store chroma down", green after), and a tritonserver (red "Triton down", green
after; a server with no models starts in about 15 s the first time, 1-2 s again, cheap enough).

One broker, worker, executor, sink and API serve the module (`pipe`); each test starts from
everything green and leaves it so."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from api.health import TOPICS, Checks
from api.store import Store
from api.view import View
from infra.kafka import KafkaBroker
from infra.process import free_ports, port_open, terminate
from infra.tritonserver.server import TritonServer
from sinks.service import SinkService
from streams import client, settings as settings_mod
from streams.services import Worker
from tests.api.helpers import ENV, GOAL, Keys, api_client, h, wait_for
from tests.conftest import fresh_group
from tests.kafka_helpers import free_port
from topics import registry as T
from topics.admin import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
PARTS = ("planner", "decomposer", "coordinator", "executor", "sinks")


class SamePortsTriton(TritonServer):
    """The same ports on every start: the restarted server is the one TRITON_URL names."""

    def _command(self):
        if not self.grpc_port:
            self.grpc_port, self.http_port, self.metrics_port = free_ports(3)
        return self.command()


@dataclass
class Pipe:
    tmp: Path
    broker: KafkaBroker
    worker: Worker
    client: object
    keys: Keys
    executor_id: str
    chroma_port: int
    triton_port: int
    procs: dict = field(default_factory=dict)
    sink: SinkService | None = None
    n: int = 0

    @property
    def bs(self) -> str:
        return self.broker.bootstrap

    def get(self, path: str):
        return self.client.get(path)

    def until(self, path: str, code: int, timeout: float = 120):
        r = wait_for(lambda: self.get(path), lambda r: r.status_code == code, timeout=timeout)
        assert r.status_code == code, (path, r.json())
        return r.json()

    def start_executor(self) -> None:
        log = open(self.tmp / "executor.log", "ab")
        self.procs["executor"] = subprocess.Popen(
            [sys.executable, "-m", "executor.service", "--bootstrap", self.bs, "--id", self.executor_id,
             "--slots", "64", "--heartbeat-s", "1", "--work-root", str(self.tmp / "executor")],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def start_sink(self) -> None:
        self.sink = SinkService(["clickhouse"], self.bs, data_dir=self.tmp / "sinks", batch_age_s=0.2).start()

    def start_chroma(self) -> None:
        log = open(self.tmp / "chroma.log", "ab")
        self.procs["chroma"] = subprocess.Popen(
            [str(Path(sys.executable).parent / "chroma"), "run", "--path", str(self.tmp / "chroma"),
             "--host", "127.0.0.1", "--port", str(self.chroma_port)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not port_open(self.chroma_port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert port_open(self.chroma_port), "chroma did not listen"

    def stop(self, name: str, kill: bool = False) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and kill:
            proc.kill()
            proc.wait(15)
        elif proc is not None:
            terminate(proc, 15)

    def flow(self, goals: int) -> list[str]:
        """`goals` goals through the API, each approved: plans, updates and first assignments."""
        pids = []
        for _ in range(goals):
            self.n += 1
            r = self.client.post("/api/v1/plans", json={**GOAL, "goal_id": f"h{self.n}-{uuid.uuid4().hex[:6]}"},
                                 headers=h(self.keys.planner))
            assert r.status_code == 202, r.text
            pids.append(r.json()["plan_id"])
        for pid in pids:
            p = wait_for(lambda: self.client.get(f"/api/v1/plans/{pid}", headers=h(self.keys.viewer)).json(),
                         lambda p: p["approval"] is not None)
            if p["approval"] == "PENDING":
                assert self.client.post(f"/api/v1/plans/{pid}/approve", headers=h(self.keys.approver)
                                        ).status_code == 202
        return pids

    def tasks(self, pids: list[str]) -> list[dict]:
        return [self.client.get(f"/api/v1/plans/{p}/report", headers=h(self.keys.viewer)).json()["tasks"]
                for p in pids]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("health")
    broker = KafkaBroker(data_dir=tmp / "kafka", port=free_port(), controller_port=free_port()).start()
    pipe = None
    try:
        bs = broker.bootstrap
        app_id = f"chimera-health-{uuid.uuid4().hex[:6]}"
        executor_id = f"hx-{uuid.uuid4().hex[:6]}"
        asyncio.run(create_topics(bs))
        asyncio.run(fresh_group(bs, app_id))
        asyncio.run(client.commit_at_end(bs, f"chimera-executor.{executor_id}", TOPICS["executor"]))
        asyncio.run(client.commit_at_end(bs, "chimera-sink-clickhouse", TOPICS["sinks"]))
        worker = Worker(bs, env={k: str(v) for k, v in {**ENV, "PLANNING_RESOURCE_HEARTBEAT_TIMEOUT_SECONDS": 900
                                                        }.items()},
                        app_id=app_id, log_path=tmp / "worker.log").start().supervise()   # as `chimera up` runs it
        chroma_port, triton_port = free_port(), free_port()
        env = {"CHROMA_URL": f"http://127.0.0.1:{chroma_port}", "TRITON_URL": f"127.0.0.1:{triton_port}"}
        settings = settings_mod.load(env={"KAFKA_BOOTSTRAP": bs, "CHIMERA_APP_ID": app_id, "API_LAG_THRESHOLD": "2",
                                          "API_HEALTH_COMPONENTS": ",".join(PARTS), **env})
        keys = Keys()
        with api_client(bs, keys, health=lambda view: Checks(settings, view, env=env)) as c:
            pipe = Pipe(tmp, broker, worker, c, keys, executor_id, chroma_port, triton_port)
            pipe.start_chroma()
            pipe.start_executor()
            pipe.start_sink()
            yield pipe
    finally:
        if pipe is not None:
            for name in list(pipe.procs):
                pipe.stop(name)
            if pipe.sink is not None:
                pipe.sink.stop()
            pipe.worker.stop()
            for log in ("worker.log", "executor.log"):
                if (tmp / log).exists():
                    print(f"--- {log} (tail) ---\n" + "\n".join((tmp / log).read_text(errors="replace")
                                                             .splitlines()[-40:]))
        broker.stop()


def test_broker_stopped_every_component_red_with_the_reason_then_green(pipe):
    pipe.flow(1)
    body = pipe.until("/health", 200)
    assert body["components"] == {**{p: "healthy" for p in PARTS}, "triton": "unhealthy"}, body
    assert pipe.get("/health/nothing").status_code == 404

    # the executor stays up through the outage: it used to hang for ever in librdkafka's
    # send_offsets_to_transaction after a broker restart (executor/deadline.py), lag growing
    pipe.broker.stop()
    r = pipe.get("/health")
    assert r.status_code == 503 and any("broker unreachable" in x for x in r.json()["reasons"]), r.json()
    for part in PARTS:
        r = pipe.get(f"/health/{part}")
        assert r.status_code == 503 and r.json()["reasons"][0].startswith("broker unreachable"), (part, r.json())

    pipe.broker.start()
    pipe.until("/health", 200)
    for part in PARTS:
        assert pipe.until(f"/health/{part}", 200)["status"] == "healthy"


def test_triton_stopped_red_with_the_reason_then_green(pipe):
    """Nothing at TRITON_URL, then a real tritonserver there, stopped, started again."""
    body = pipe.until("/health/triton", 503, timeout=1)
    assert body["reasons"][0].startswith(f"Triton down at 127.0.0.1:{pipe.triton_port}"), body
    repo = pipe.tmp / "triton-repo"
    repo.mkdir()
    server = SamePortsTriton(repo, log_dir=pipe.tmp / "triton")
    server.grpc_port, server.http_port, server.metrics_port = pipe.triton_port, *free_ports(2)
    try:
        server.start()
        assert pipe.until("/health/triton", 200)["status"] == "healthy"
        server.stop()
        body = pipe.until("/health/triton", 503, timeout=10)
        assert body["reasons"][0].startswith(f"Triton down at 127.0.0.1:{pipe.triton_port}"), body
        server.start()
        assert pipe.until("/health/triton", 200)["details"] == {"url": f"127.0.0.1:{pipe.triton_port}"}
    finally:
        server.stop()
        server.close()


def test_sink_and_its_store_stopped_red_with_the_reason_then_green(pipe):
    assert pipe.until("/health/sinks", 200)["details"]["chroma"] == "up"
    pipe.stop("chroma")
    body = pipe.until("/health/sinks", 503, timeout=10)
    assert [r for r in body["reasons"] if r.startswith("store chroma down: 127.0.0.1:%d" % pipe.chroma_port)], body
    pipe.start_chroma()
    assert pipe.until("/health/sinks", 200)["details"]["chroma"] == "up"

    pipe.sink.stop()
    pipe.flow(3)
    body = pipe.until("/health/sinks", 503, timeout=60)
    assert any(r.startswith("consumer lag") and "over threshold 2 (group chimera-sink-clickhouse:" in r
               for r in body["reasons"]), body
    pipe.start_sink()
    pipe.until("/health/sinks", 200)
    # caught up is lag 0: the executors' transaction markers at the ends of feedback's partitions
    # are no records (counted as offsets, the sink stayed one behind on each for ever)
    body = wait_for(lambda: pipe.get("/health/sinks").json(),
                    lambda b: b["details"]["chimera-sink-clickhouse"]["lag"] == 0, timeout=60)
    assert body["details"]["chimera-sink-clickhouse"]["lag"] == 0, body


def test_executor_stopped_red_on_lag_then_green(pipe):
    group = f"chimera-executor.{pipe.executor_id}"
    assert group in pipe.until("/health/executor", 200)["details"]
    # killed (a stopped executor withdraws its resource, and then nothing is assigned to wait):
    # the planner still counts on it, its three first tasks are assigned, nobody reads them
    pipe.stop("executor", kill=True)
    pids = pipe.flow(3)
    r = wait_for(lambda: pipe.get("/health/executor"), lambda r: r.status_code == 503, timeout=60)
    assert r.status_code == 503, (r.json(), pipe.tasks(pids))
    body = r.json()
    assert any(r.startswith("consumer lag") and f"(group {group}: {T.TASKS_ASSIGNED.name}" in r
               for r in body["reasons"]), body
    pipe.start_executor()
    assert pipe.until("/health/executor", 200)["details"][group]["lag"] <= 2
    # an API started now, when feedback's partitions end in the executors' transaction markers,
    # catches up all the same (its view counted markers as records it had not read: never ready)
    view = View(pipe.bs, Store())
    view.start()
    try:
        assert view.ready.wait(60), "a new view never caught up with partitions ending in markers"
    finally:
        view.stop()


def test_worker_stopped_decomposer_red_on_lag_then_green(pipe):
    assert pipe.until("/health/decomposer", 200)["status"] == "healthy"
    pipe.worker.stop()
    for i in range(3):
        r = pipe.client.post("/api/v1/plans", json={**GOAL, "goal_id": f"lag-{i}"}, headers=h(pipe.keys.planner))
        assert r.status_code == 202
    r = pipe.get("/health/decomposer")
    assert r.status_code == 503 and "consumer lag 3 over threshold 2" in r.json()["reasons"][0], r.json()
    assert pipe.get("/health").status_code == 503
    pipe.worker.start()
    assert pipe.until("/health/decomposer", 200)["details"]
    pipe.until("/health", 200)
