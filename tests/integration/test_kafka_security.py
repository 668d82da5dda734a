"""The local broker with SASL (PLAIN and SCRAM) and ACLs: clients authenticate; a principal
without the ACL cannot forge an approval, a refinement or a control command (the broker refuses
it); the API's principal may approve and the planner's may refine; the sinks read and write
their dead letters, the executor runs transactions under its id prefix; a wrong password is
refused; no password reaches a log."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from api.health import Checks
from api.writer import WriteFailed, Writer
from sinks.base import Sink, SinkRunner
from infra.kafka.secure import SCRAM, SecureKafkaBroker, apply_acls
from topics import security
from topics.registry import (CONTROL_COMMANDS, EXECUTION_FEEDBACK, PLANS_APPROVALS, PLANS_CREATED, PLANS_REFINED,
                             RESOURCES_AVAILABILITY, SINKS_DLQ, TASKS_ASSIGNED)
from topics.serde import serde

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USERS = {"admin": "admin-secret", "api": "api-secret", "planner": "planner-secret", "executor": "executor-secret",
         "sinks": "sinks-secret"}
ONE_PARTITION = (CONTROL_COMMANDS.name, EXECUTION_FEEDBACK.name, PLANS_CREATED.name, RESOURCES_AVAILABILITY.name,
                 SINKS_DLQ.name, TASKS_ASSIGNED.name, TASKS_ASSIGNED.dlq)


def _no_secret_in(text: str, where: str) -> None:
    leaked = [u for u, pw in USERS.items() if pw in text]
    assert not leaked, f"the password of {leaked} appears in {where}"


def _approval() -> dict:
    return {"plan_id": "plan-x", "version": 1, "decision": "APPROVE", "by": "mallory", "reason": "",
            "decided_at_ms": 1}


def _send(broker, user: str, topic: str, value: bytes, password: str | None = None,
          mechanism: str = "PLAIN", **config) -> KafkaError | None:
    env = broker.client_env(user, mechanism=mechanism)
    if password is not None:
        env["KAFKA_SASL_PASSWORD"] = password
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 8000, **security.confluent(env),
                  **config})
    result: list = []
    p.produce(topic, key=b"plan-x", value=value, on_delivery=lambda err, msg: result.append(err))
    p.flush(15)
    return result[0] if result else KafkaError(KafkaError._MSG_TIMED_OUT)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    with SecureKafkaBroker(USERS, data_dir=tmp_path_factory.mktemp("sasl")) as broker:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, **security.confluent(broker.client_env("admin"))})
        for f in admin.create_topics([NewTopic(PLANS_APPROVALS.name, 4, 1), NewTopic(PLANS_REFINED.name, 4, 1),
                                      NewTopic("api.audit", 1, 1),
                                      *(NewTopic(t, 1, 1) for t in ONE_PARTITION)]).values():
            f.result()
        assert apply_acls(broker.bootstrap, security.confluent(broker.client_env("admin"))) > 20
        # new ACLs reach the authorizer through the metadata log: wait until the API's is in force
        value = serde(PLANS_APPROVALS.name).encode(_approval())
        deadline = time.monotonic() + 60
        while _send(broker, "api", PLANS_APPROVALS.name, value) is not None:
            assert time.monotonic() < deadline, "the ACLs never took effect"
            time.sleep(0.5)
        yield broker
        _no_secret_in(broker.tail_log(100_000), "the broker's log")


def test_forged_approval_is_refused_and_the_apis_is_taken(secure_broker):
    value = serde(PLANS_APPROVALS.name).encode(_approval())
    err = _send(secure_broker, "executor", PLANS_APPROVALS.name, value)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert _send(secure_broker, "planner", PLANS_APPROVALS.name, value).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # the API's own writer, configured from KAFKA_SECURITY_* settings, may
    w = Writer(secure_broker.bootstrap, 10.0, security.confluent(secure_broker.client_env("api")))
    w.send(PLANS_APPROVALS.name, "plan-x", _approval())


def test_forged_refinement_is_refused_and_the_planners_is_taken(secure_broker):
    raw = b"\x00\x00\x00\x00\x10forged"
    for user in ("api", "executor"):
        err = _send(secure_broker, user, PLANS_REFINED.name, raw)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (user, err)
    assert _send(secure_broker, "planner", PLANS_REFINED.name, raw) is None


def test_a_wrong_password_is_refused(secure_broker):
    w = Writer(secure_broker.bootstrap, 5.0, security.confluent({**secure_broker.client_env("api"),
                                                                 "KAFKA_SASL_PASSWORD": "guess"}))
    with pytest.raises(WriteFailed):
        w.send(PLANS_APPROVALS.name, "plan-x", _approval())


def test_tls_listener_with_a_generated_ca(tmp_path, caplog):
    """SASL over TLS: the API's writer trusts the generated CA and writes; a client that does not
    trust it cannot connect; neither the passwords nor the private keys reach a log."""
    caplog.set_level(logging.DEBUG)
    with SecureKafkaBroker(USERS, data_dir=tmp_path / "tls", tls=True) as broker:
        assert broker.ca_file is not None and broker.ca_file.exists()
        from confluent_kafka.admin import AdminClient, NewTopic
        admin_env = broker.client_env("admin", tls=True)
        admin = AdminClient({"bootstrap.servers": broker.tls_bootstrap, **security.confluent(admin_env)})
        for f in admin.create_topics([NewTopic("api.audit", 1, 1)]).values():
            f.result()
        w = Writer(broker.tls_bootstrap, 15.0, security.confluent(admin_env))
        w.send("api.audit", "acme", {"event_id": "e1", "at_ms": 1, "tenant": "acme", "key_id": "k", "principal": "p",
                                     "role": "admin", "action": "tls-check", "method": "POST", "path": "/",
                                     "target": "", "status": 202, "detail": "", "trace_id": ""})
        untrusting = {**security.confluent(admin_env)}
        untrusting.pop("ssl.ca.location")
        w2 = Writer(broker.tls_bootstrap, 5.0, untrusting)
        with pytest.raises(WriteFailed):
            w2.send("api.audit", "acme", {"event_id": "e2", "at_ms": 1, "tenant": "acme", "key_id": "k",
                                          "principal": "p", "role": "admin", "action": "x", "method": "POST",
                                          "path": "/", "target": "", "status": 202, "detail": "", "trace_id": ""})
        keys = [tmp_path / "tls" / "tls" / n for n in ("broker.key", "ca.key")]
        for secret in (*keys, tmp_path / "tls" / "tls" / "broker-keystore.pem", tmp_path / "tls" / "server.properties"):
            assert secret.stat().st_mode & 0o077 == 0, f"{secret.name} is readable by others"
    logs = {"the broker's log": broker.tail_log(100_000), "the clients' logs": caplog.text}
    key_lines = [ln for k in keys for ln in k.read_text().splitlines() if ln and not ln.startswith("-----")]
    assert len(key_lines) > 20
    for where, text in logs.items():
        _no_secret_in(text, where)
        assert not [ln for ln in key_lines if ln in text], f"private key material appears in {where}"


def _consume(env: dict, group: str, topic: str, want: bytes, timeout: float = 30.0) -> Consumer:
    """A confluent consumer as `env`'s principal in `group` that has read `want` from `topic`."""
    c = Consumer({"bootstrap.servers": env["KAFKA_BOOTSTRAP"], "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **security.confluent(env)})
    c.subscribe([topic])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        if m.value() == want:
            return c
    c.close()
    raise AssertionError(f"{want!r} never read from {topic} as {env['KAFKA_SASL_USERNAME']}")


def test_scram_client_produces_and_consumes_and_a_wrong_password_is_refused(secure_broker, caplog):
    """SCRAM-SHA-512 from KAFKA_SECURITY_* settings, with both client libraries: librdkafka
    produces, aiokafka consumes; the same user with a wrong password is refused."""
    caplog.set_level(logging.DEBUG)
    env = secure_broker.client_env("planner", mechanism=SCRAM)
    assert security.confluent(env)["sasl.mechanism"] == SCRAM
    value = f"scram-{uuid.uuid4().hex}".encode()
    assert _send(secure_broker, "planner", PLANS_REFINED.name, value, mechanism=SCRAM) is None

    async def read() -> bytes | None:
        from aiokafka import AIOKafkaConsumer
        c = AIOKafkaConsumer(PLANS_REFINED.name, bootstrap_servers=secure_broker.bootstrap,
                             group_id=f"chimera-planner-scram-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
                             **security.aiokafka(env))
        await c.start()
        try:
            async for m in c:
                if m.value == value:
                    return m.value
        finally:
            await c.stop()
    assert asyncio.run(asyncio.wait_for(read(), 30)) == value

    err = _send(secure_broker, "planner", PLANS_REFINED.name, b"x", password="planner-guess", mechanism=SCRAM)
    assert err is not None and err.code() != KafkaError.NO_ERROR
    w = Writer(secure_broker.bootstrap, 5.0, security.confluent({**env, "KAFKA_SASL_PASSWORD": "guess"}))
    with pytest.raises(WriteFailed):
        w.send(PLANS_APPROVALS.name, "plan-x", _approval())
    _no_secret_in(caplog.text, "the clients' logs")


def test_forged_control_command_is_refused_and_the_apis_is_taken(secure_broker):
    raw = b"\x00\x00\x00\x00\x10forged-stop"
    for user in ("executor", "planner", "sinks"):
        err = _send(secure_broker, user, CONTROL_COMMANDS.name, raw)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (user, err)
    assert _send(secure_broker, "api", CONTROL_COMMANDS.name, raw) is None


def test_sinks_read_every_topic_and_write_only_their_dead_letters(secure_broker):
    value = f"plan-{uuid.uuid4().hex}".encode()
    assert _send(secure_broker, "planner", PLANS_CREATED.name, value) is None
    c = _consume(secure_broker.client_env("sinks"), f"chimera-sink-acl-{uuid.uuid4().hex[:6]}", PLANS_CREATED.name,
                 value)
    c.commit(asynchronous=False)   # the group's offsets are the sinks' to keep
    c.close()
    # the sinks' producer is idempotent (sinks/base.py): WRITE on its topic is all that takes
    assert _send(secure_broker, "sinks", SINKS_DLQ.name, b"undecodable", **{"enable.idempotence": True}) is None
    for topic in (PLANS_CREATED.name, EXECUTION_FEEDBACK.name, CONTROL_COMMANDS.name):
        err = _send(secure_broker, "sinks", topic, b"forged")
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, err)


class _Kept(Sink):
    """A store that keeps what it is given: the runner's Kafka side is what is under test."""
    name, topics = "acl", (PLANS_CREATED.name,)

    def __init__(self) -> None:
        self.kept: list = []

    def write(self, batch) -> None:
        self.kept.extend(batch)


def test_the_sink_runner_under_the_sinks_principal_dead_letters_garbage(secure_broker, monkeypatch):
    """The real SinkRunner (topics checked, group joined, idempotent dead-letter producer,
    offsets committed) with KAFKA_SECURITY_* of the `sinks` principal: undecodable records on a
    plan topic reach chimera.sinks.dlq."""
    for k, v in secure_broker.client_env("sinks").items():
        monkeypatch.setenv(k, v)
    assert _send(secure_broker, "planner", PLANS_CREATED.name, b"not avro") is None
    runner = SinkRunner(_Kept(), secure_broker.bootstrap, group=f"chimera-sink-acl-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    t = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while not (runner.dead_letters and runner.committed) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(30)
    assert runner.dead_letters >= 1 and runner.committed, (runner.dead_letters, runner.committed, runner.last_error)
    c = _consume(secure_broker.client_env("sinks"), f"chimera-sink-acl-dlq-{uuid.uuid4().hex[:6]}", SINKS_DLQ.name,
                 b"not avro")
    c.close()


def test_executor_transaction_under_its_prefix_and_the_api_sees_its_lag(secure_broker):
    """The executor's loop (consume an assignment; feedback, availability and a dead letter plus
    the consumed offset in one transaction) under its ACLs; a transactional id outside its prefix
    is refused; the API's /health lag check may describe the executor's group."""
    run = uuid.uuid4().hex[:6]
    value = f"assignment-{run}".encode()
    assert _send(secure_broker, "planner", TASKS_ASSIGNED.name, value) is None
    env = secure_broker.client_env("executor")
    group = f"chimera-executor.acl-{run}"
    c = _consume(env, group, TASKS_ASSIGNED.name, value)
    tx = Producer({"bootstrap.servers": secure_broker.bootstrap, "transactional.id": f"chimera-executor-acl-{run}",
                   **security.confluent(env)})
    tx.init_transactions(30)
    tx.begin_transaction()
    for topic in (EXECUTION_FEEDBACK.name, RESOURCES_AVAILABILITY.name, TASKS_ASSIGNED.dlq):
        tx.produce(topic, key=b"plan-x", value=value)
    tx.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
    tx.commit_transaction(30)
    c.close()

    forged = Producer({"bootstrap.servers": secure_broker.bootstrap, "transactional.id": f"chimera-planner-{run}",
                       **security.confluent(env)})
    with pytest.raises(KafkaException) as exc:
        forged.init_transactions(15)
    assert exc.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, exc.value

    checks = Checks(SimpleNamespace(bootstrap=secure_broker.bootstrap), env=secure_broker.client_env("api"))
    assert group in checks.groups("chimera-executor")
    total, per = checks.lag(group, (TASKS_ASSIGNED.name,))
    assert total == 0 and per == {TASKS_ASSIGNED.name: 0}, (total, per)
