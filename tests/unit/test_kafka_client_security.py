"""KAFKA_SECURITY_* settings in both client libraries' terms (SCRAM included), and SASL tokens
kept out of the logs (aiokafka logs PLAIN's password-bearing request at DEBUG)."""
from __future__ import annotations

import logging

import pytest

from infra.kafka.secure import scram_argument
from topics import security

SCRAM_ENV = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
             "KAFKA_SASL_USERNAME": "exec", "KAFKA_SASL_PASSWORD": "s3cret"}


def test_scram_settings_reach_both_client_libraries():
    assert security.confluent(SCRAM_ENV) == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                             "sasl.username": "exec", "sasl.password": "s3cret"}
    a = security.aiokafka(SCRAM_ENV)
    assert (a["sasl_mechanism"], a["sasl_plain_username"], a["sasl_plain_password"]) == ("SCRAM-SHA-512", "exec",
                                                                                         "s3cret")


@pytest.mark.parametrize("token", [b"\x00exec\x00s3cret", b"\x00exec\x00s3'cr\"et", b"\x00exec\x00s3\\'cret"])
def test_a_logged_sasl_token_is_redacted(caplog, token):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "127.0.0.1", 9092, 3,
                                             f"SaslAuthenticateRequest_v1(sasl_auth_bytes={token!r})")
    assert "s3" not in caplog.text and "sasl_auth_bytes=<redacted>" in caplog.text, caplog.text


def test_the_storage_tool_gets_a_salted_password_never_the_password():
    arg = scram_argument("exec", "s3cret")
    assert arg.startswith("SCRAM-SHA-512=[name=exec,iterations=8192,salt=\"") and "saltedpassword=\"" in arg
    assert "s3cret" not in arg and scram_argument("exec", "s3cret") != arg   # a fresh salt each time
