"""The project-started Kafka broker really works: topics, produce/consume, clean stop,
persistence across a restart. Needs Java >= 17 and Maven (or an already-filled jar cache)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka import KafkaBroker, KafkaSetupError, ensure_jars, kafka_cluster


@pytest.fixture(scope="module")
def libs():
    """`make test` installs Java and Maven first, so a missing one is a failure, not a skip."""
    return ensure_jars()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie would still answer kill(0); Popen.wait() reaped ours, so this means alive.
    return True


def _port_free(port: int) -> bool:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _consume_one(bootstrap: str, topic: str, timeout: float = 20.0):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"t-{uuid.uuid4()}",
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout)
        await consumer.commit()  # exercises the group coordinator (__consumer_offsets)
        return msg
    finally:
        await consumer.stop()


@pytest.mark.integration
def test_topic_produce_consume_and_clean_stop(libs):
    broker = KafkaBroker(libs=libs)
    with broker:
        port, pid, data_dir = broker.port, broker.proc.pid, broker.data_dir
        assert broker.bootstrap == f"127.0.0.1:{port}"
        print(f"broker start: {broker.start_seconds:.2f}s")
        asyncio.run(_create_topic(broker.bootstrap, "chimera.test"))
        asyncio.run(_produce(broker.bootstrap, "chimera.test", b"goal-1", b"hello"))
        msg = asyncio.run(_consume_one(broker.bootstrap, "chimera.test"))
        assert (msg.key, msg.value) == (b"goal-1", b"hello")
    assert broker.proc is None and not _pid_alive(pid)
    assert _port_free(port)
    assert not data_dir.exists()  # the temp dir is removed


@pytest.mark.integration
def test_restart_on_same_data_dir_keeps_records(libs, tmp_path):
    data = tmp_path / "kafka"
    with KafkaBroker(data_dir=data, libs=libs) as broker:
        asyncio.run(_create_topic(broker.bootstrap, "chimera.persist"))
        asyncio.run(_produce(broker.bootstrap, "chimera.persist", b"k", b"survives"))
        first_pid = broker.proc.pid
    assert not _pid_alive(first_pid)
    assert (data / "kraft-logs" / "meta.properties").exists()  # a given data_dir is kept

    with KafkaBroker(data_dir=data, libs=libs) as broker:  # new ports, same storage
        msg = asyncio.run(_consume_one(broker.bootstrap, "chimera.persist"))
        assert msg.value == b"survives"


@pytest.mark.integration
def test_early_exit_is_reported_with_log_tail(libs, tmp_path):
    # Someone else already listens on the port: the broker JVM dies at bind time, and
    # start() must say so promptly (not wait out the deadline) and clean up.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = KafkaBroker(data_dir=tmp_path / "busy", port=squatter.getsockname()[1],
                             libs=libs, start_timeout=60)
        with pytest.raises(KafkaSetupError, match="exited early") as err:
            broker.start()
    assert "last log lines" in str(err.value)
    assert broker.proc is None


def test_external_bootstrap_starts_nothing(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka.example:9092")
    with kafka_cluster() as bootstrap:
        assert bootstrap == "kafka.example:9092"
