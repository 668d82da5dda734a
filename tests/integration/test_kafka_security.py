"""The local broker with SASL and ACLs: clients authenticate; a principal without the ACL
cannot forge an approval or a refinement (the broker refuses it); the API's principal may
approve and the planner's may refine; a wrong password is refused."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from api.writer import WriteFailed, Writer
from infra.kafka.secure import SecureKafkaBroker, apply_acls
from topics import security
from topics.registry import PLANS_APPROVALS, PLANS_REFINED
from topics.serde import serde

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USERS = {"admin": "admin-secret", "api": "api-secret", "planner": "planner-secret", "executor": "executor-secret"}


def _approval() -> dict:
    return {"plan_id": "plan-x", "version": 1, "decision": "APPROVE", "by": "mallory", "reason": "",
            "decided_at_ms": 1}


def _send(broker, user: str, topic: str, value: bytes, password: str | None = None) -> KafkaError | None:
    env = broker.client_env(user)
    if password is not None:
        env["KAFKA_SASL_PASSWORD"] = password
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 8000, **security.confluent(env)})
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
                                      NewTopic("api.audit", 1, 1)]).values():
            f.result()
        assert apply_acls(broker.bootstrap, security.confluent(broker.client_env("admin"))) > 20
        # new ACLs reach the authorizer through the metadata log: wait until the API's is in force
        value = serde(PLANS_APPROVALS.name).encode(_approval())
        deadline = time.monotonic() + 60
        while _send(broker, "api", PLANS_APPROVALS.name, value) is not None:
            assert time.monotonic() < deadline, "the ACLs never took effect"
            time.sleep(0.5)
        yield broker


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


def test_tls_listener_with_a_generated_ca(tmp_path):
    """SASL over TLS: the API's writer trusts the generated CA and writes; a client that does not
    trust it cannot connect."""
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
