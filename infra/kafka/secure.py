"""The local broker with authentication and authorisation: a SASL listener for every client
(PLAIN and SCRAM-SHA-512; no plaintext client listener), Kafka's StandardAuthorizer, and ACLs
that give each principal only what its role needs (`ACLS`, applied by `apply_acls`).

SCRAM credentials live in the cluster metadata; in KRaft they are bootstrap records written
when the storage is formatted (`kafka-storage format --add-scram`, KIP-900). They are passed
salted (`saltedpassword`, computed here), so the plain password is on no command line.

The controller listener stays PLAINTEXT on loopback; its principal (ANONYMOUS) is a super user
so the combined broker+controller can talk to itself, and a controller listener serves no
produce or fetch requests, so it is no way around the ACLs.
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from pathlib import Path

from infra.process import free_ports, port_open

from .broker import KafkaBroker, KafkaSetupError

SCRAM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192   # Kafka's minimum is 4096
# principal -> (resource type, name, prefixed?, operation) allowed. Everything else is denied.
# README "Security" tabulates them; keep the two together.
_READ_PLAN = ["plans.created", "plans.updated", "tasks.assigned", "risks.alerts", "execution.feedback",
              "goals.created", "plans.approvals", "control.commands", "api.audit"]
ACLS = {
    # the API: the only writer of approvals, control commands and the audit log; it describes
    # every worker's consumer group (chimera-planner..., chimera-executor..., chimera-sink-...)
    # for /health's lag check
    "api": [("TOPIC", t, False, "WRITE") for t in ("goals.created", "plans.approvals", "control.commands",
                                                     "execution.feedback", "api.audit")]
           + [("TOPIC", t, False, "READ") for t in _READ_PLAN] + [("TOPIC", "*", False, "DESCRIBE")]
           + [("GROUP", "chimera-", True, "DESCRIBE")],
    # planner workers: the only writers of internal and plan topics
    "planner": [("TOPIC", "chimera.", True, op) for op in ("READ", "WRITE", "DESCRIBE")]
               + [("TOPIC", t, False, op) for t in ("plans.created", "plans.updated", "tasks.assigned",
                                                     "risks.alerts", "resources.allocations")
                  for op in ("WRITE", "DESCRIBE")]
               + [("TOPIC", t, False, "READ") for t in ("goals.created", "execution.feedback", "plans.approvals",
                                                         "control.commands", "resources.availability")]
               + [("GROUP", "chimera-planner", True, "READ"), ("TRANSACTIONAL_ID", "chimera-planner", True, "WRITE")],
    # executors: feedback (and their own availability announcements, and unreadable
    # assignments' dead letters) only, in transactions under their own id prefix
    "executor": [("TOPIC", t, False, "WRITE") for t in ("execution.feedback", "resources.availability",
                                                        "tasks.assigned.dlq")]
                + [("TOPIC", t, False, "READ") for t in ("tasks.assigned", "control.commands")]
                + [("TOPIC", "*", False, "DESCRIBE"), ("GROUP", "chimera-executor", True, "READ"),
                   ("TRANSACTIONAL_ID", "chimera-executor", True, "WRITE")],
    # the sinks: read every topic (default_acls lists them), write only their dead letters
    "sinks": [("TOPIC", "chimera.sinks.dlq", False, "WRITE"), ("TOPIC", "*", False, "DESCRIBE"),
              ("GROUP", "chimera-sink-", True, "READ")],
}


def scram_argument(user: str, password: str, mechanism: str = SCRAM, iterations: int = SCRAM_ITERATIONS) -> str:
    """`kafka-storage format --add-scram` value for one user: the RFC 5802 SaltedPassword
    (PBKDF2-HMAC over the password, a random salt), both base64, never the password itself."""
    algo = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    salt = os.urandom(24)
    salted = hashlib.pbkdf2_hmac(algo, password.encode(), salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return (f'{mechanism}=[name={user},iterations={iterations},salt="{b64(salt)}",'
            f'saltedpassword="{b64(salted)}"]')


def make_ca_and_cert(folder: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A throw-away CA and a broker certificate it signs (SAN: the loopback address), with
    Debian's openssl: PEM files Kafka reads directly (ssl.keystore.type=PEM)."""
    folder.mkdir(parents=True, exist_ok=True)
    f = {k: folder / n for k, n in (("ca_key", "ca.key"), ("ca", "ca.pem"), ("key", "broker.key"),
                                    ("csr", "broker.csr"), ("cert", "broker.pem"), ("ext", "san.ext"))}

    def run(*args: str) -> None:
        res = subprocess.run(["openssl", *args], capture_output=True, text=True)
        if res.returncode != 0:
            raise KafkaSetupError(f"openssl {' '.join(args[:2])} failed: {res.stderr[-1000:]}")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(f["ca_key"]), "-out", str(f["ca"]),
        "-days", "2", "-subj", "/CN=chimera-local-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(f["key"]), "-out", str(f["csr"]),
        "-subj", f"/CN={host}")
    f["ext"].write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    run("x509", "-req", "-in", str(f["csr"]), "-CA", str(f["ca"]), "-CAkey", str(f["ca_key"]), "-CAcreateserial",
        "-out", str(f["cert"]), "-days", "2", "-extfile", str(f["ext"]))
    return f


class SecureKafkaBroker(KafkaBroker):
    """`users`: principal -> password; "admin" (a super user: topics and ACLs) is required.
    `tls=True` adds a SASL_SSL listener (`tls_bootstrap`) with a CA generated at start (`ca_file`)."""

    probe, poll_s = "answer a SASL metadata request as admin", 0.2

    def __init__(self, users: dict[str, str], data_dir=None, tls: bool = False, **kwargs) -> None:
        if "admin" not in users:
            raise ValueError("users needs an 'admin' (the broker's own and the ACL manager's principal)")
        self.users = dict(users)
        self.tls = tls
        port = kwargs.pop("port", None) or free_ports(1)[0]
        cport = kwargs.pop("controller_port", None) or next(p for p in free_ports(2) if p != port)
        self.tls_port = next(p for p in free_ports(3) if p not in (port, cport)) if tls else None
        self.ca_file: Path | None = None
        if any(not u.replace("-", "").replace("_", "").isalnum() for u in users):
            raise ValueError("user names: letters, digits, '-' and '_' only (they go into JAAS and --add-scram)")
        jaas = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
                f'password="{users["admin"]}" ' + " ".join(f'user_{u}="{p}"' for u, p in users.items()) + ";")
        scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        extra = {
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": f"PLAIN,{SCRAM}",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
            f"listener.name.sasl_plaintext.{SCRAM.lower()}.sasl.jaas.config": scram_jaas,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:admin;User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
            **kwargs.pop("extra_config", {}),
        }
        if tls:
            extra.update({
                "listeners": extra["listeners"] + f",SASL_SSL://127.0.0.1:{self.tls_port}",
                "advertised.listeners": extra["advertised.listeners"] + f",SASL_SSL://127.0.0.1:{self.tls_port}",
                "listener.security.protocol.map": extra["listener.security.protocol.map"] + ",SASL_SSL:SASL_SSL",
                "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
                f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config": scram_jaas,
                "ssl.keystore.type": "PEM",
            })
        self._extra_tls = tls
        super().__init__(data_dir, port=port, controller_port=cport, extra_config=extra, **kwargs)

    @property
    def tls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def _write_config(self) -> Path:
        if self._extra_tls:   # the certificate, made in the data folder before the first config is written
            folder = Path(self.data_dir) / "tls"
            f = make_ca_and_cert(folder) if not (folder / "broker.pem").exists() else {
                "ca": folder / "ca.pem", "cert": folder / "broker.pem", "key": folder / "broker.key"}
            self.ca_file = f["ca"]
            store = folder / "broker-keystore.pem"   # PEM keystore: the PKCS#8 key, then the chain
            store.touch(mode=0o600)
            store.write_text(f["key"].read_text() + f["cert"].read_text())
            self.extra_config["ssl.keystore.location"] = str(store)
            for secret in (store, folder / "broker.key", folder / "ca.key"):
                secret.chmod(0o600)
        path = super()._write_config()
        path.chmod(0o600)   # the JAAS line holds every PLAIN password
        return path

    def _format_args(self) -> list[str]:
        """Every user's SCRAM credential, as bootstrap records of the metadata log."""
        return [a for u, p in self.users.items() for a in ("--add-scram", scram_argument(u, p))]

    def client_env(self, user: str, tls: bool = False, mechanism: str = "PLAIN") -> dict[str, str]:
        """KAFKA_* settings for a client acting as `user` over `mechanism` (PLAIN or SCRAM:
        topics.security reads them)."""
        env = {"KAFKA_BOOTSTRAP": self.bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
               "KAFKA_SASL_MECHANISM": mechanism, "KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD": self.users[user]}
        if tls:
            env.update({"KAFKA_BOOTSTRAP": self.tls_bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                        "KAFKA_SSL_CAFILE": str(self.ca_file)})
        return env

    def ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        from topics.security import confluent
        return port_open(self.port) and bool(AdminClient(
            {"bootstrap.servers": self.bootstrap, **confluent(self.client_env("admin"))}).list_topics(timeout=3).brokers)


def default_acls(app_id: str = "chimera-planner") -> dict:
    """ACLS plus the planner's right to write every dead-letter topic (<topic>.dlq: an ACL
    prefix cannot match a suffix, so they are listed from the topic registry) and to its Faust
    app's own topics (changelogs, the assignor's: `<app_id>-...`, created by the worker) and group;
    and the sinks' right to read every topic of the registry (dead letters included)."""
    from topics.registry import TOPICS, all_topic_names
    out = {k: list(v) for k, v in ACLS.items()}
    out["sinks"] += [("TOPIC", t, False, "READ") for t in all_topic_names()]
    out["planner"] += [("TOPIC", t.dlq, False, "WRITE") for t in TOPICS if t.has_dlq]
    out["planner"] += [("TOPIC", app_id, True, op) for op in ("CREATE", "READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS")]
    out["planner"] += [("GROUP", app_id, True, "READ")]
    return out


def apply_acls(bootstrap: str, admin_config: dict, acls: dict | None = None) -> int:
    """Create the ACLs (idempotent: the broker keeps one binding per pattern); how many."""
    acls = acls if acls is not None else default_acls()
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType,
                                       ResourceType)
    admin = AdminClient({"bootstrap.servers": bootstrap, **admin_config})
    bindings = [AclBinding(ResourceType[rtype], name, ResourcePatternType.PREFIXED if prefixed else
                           ResourcePatternType.LITERAL, f"User:{user}", "*", AclOperation[op], AclPermissionType.ALLOW)
                for user, rules in acls.items()
                for rtype, name, prefixed, op in dict.fromkeys(rules)]   # a rule listed twice: once
    for f in admin.create_acls(bindings, request_timeout=15).values():
        f.result()
    return len(bindings)
