"""Kafka client security from KAFKA_SECURITY_* settings, in the two client libraries' terms.

KAFKA_SECURITY_PROTOCOL  PLAINTEXT (default), SASL_PLAINTEXT, SSL or SASL_SSL
KAFKA_SASL_MECHANISM     PLAIN (default) or SCRAM-SHA-256 / SCRAM-SHA-512
KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD   the principal's credentials (never logged)
KAFKA_SSL_CAFILE         the CA that signed the broker's certificate (PEM)

Importing this module also keeps SASL tokens out of the logs: aiokafka logs every request at
DEBUG, and PLAIN's SaslAuthenticate request carries the password in the clear.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Mapping

_SASL_BYTES = re.compile(r"""sasl_auth_bytes=b(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


class RedactSaslTokens(logging.Filter):
    """Replace a logged SASL token (`sasl_auth_bytes=b'...'`) by `<redacted>`; keep the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "sasl_auth_bytes=" in msg:
            out = _SASL_BYTES.sub("sasl_auth_bytes=<redacted>", msg)
            if "sasl_auth_bytes=b" in out:   # a form the pattern missed: drop the rest of the line
                out = out[:out.index("sasl_auth_bytes=b")] + "sasl_auth_bytes=<redacted>"
            record.msg, record.args = out, ()
        return True


REDACT = RedactSaslTokens()
logging.getLogger("aiokafka.conn").addFilter(REDACT)   # a logger's filter sees its records before any handler


def _get(env: Mapping[str, str]) -> dict[str, str]:
    return {k: env.get(f"KAFKA_{k}", "") for k in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME",
                                                  "SASL_PASSWORD", "SSL_CAFILE")}


def principal(env: Mapping[str, str] = os.environ) -> str | None:
    """The Kafka principal the broker authenticates these settings as (User:<name> over a SASL
    protocol), or None when the connection is not authenticated."""
    s = _get(env)
    if s["SECURITY_PROTOCOL"].upper().startswith("SASL") and s["SASL_USERNAME"]:
        return f"User:{s['SASL_USERNAME']}"
    return None


def confluent(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """librdkafka settings (confluent-kafka: the API, the executor, the sinks)."""
    s = _get(env)
    proto = (s["SECURITY_PROTOCOL"] or "PLAINTEXT").upper()
    if proto == "PLAINTEXT":
        return {}
    out = {"security.protocol": proto}
    if proto.startswith("SASL"):
        out.update({"sasl.mechanism": s["SASL_MECHANISM"] or "PLAIN", "sasl.username": s["SASL_USERNAME"],
                    "sasl.password": s["SASL_PASSWORD"]})
    if proto.endswith("SSL") and s["SSL_CAFILE"]:
        out["ssl.ca.location"] = s["SSL_CAFILE"]
    return out


def aiokafka(env: Mapping[str, str] = os.environ) -> dict:
    """aiokafka keyword arguments (the CLI's clients, the health checks)."""
    s = _get(env)
    proto = (s["SECURITY_PROTOCOL"] or "PLAINTEXT").upper()
    if proto == "PLAINTEXT":
        return {}
    out: dict = {"security_protocol": proto}
    if proto.startswith("SASL"):
        out.update({"sasl_mechanism": s["SASL_MECHANISM"] or "PLAIN", "sasl_plain_username": s["SASL_USERNAME"],
                    "sasl_plain_password": s["SASL_PASSWORD"]})
    if proto.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context
        out["ssl_context"] = create_ssl_context(cafile=s["SSL_CAFILE"] or None)
    return out
