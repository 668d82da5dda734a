"""Structured logs: one JSON object per line, with trace, goal and plan ids when known.

`log.info("...", extra={"plan_id": ..., "goal_id": ..., "trace_id": ...})` puts them in the
line. The API logs JSON by default (CHIMERA_LOG_FORMAT=text for plain lines); the planner
worker, the executor and the sinks log JSON when CHIMERA_LOG_FORMAT=json (the deployments set
it), plain lines otherwise. Records never carry secrets: API keys are not logged anywhere (only
their public key id). Here in topics/ because every process kind uses it (the executor may
import only processors/ and topics/).
"""
from __future__ import annotations

import json
import logging
import os
import time

FIELDS = ("trace_id", "goal_id", "plan_id", "task_id", "key_id", "tenant")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "service": self.service, "logger": record.name,
               "message": record.getMessage()}
        for f in FIELDS:
            v = getattr(record, f, None)
            if v:
                out[f] = v
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def setup(service: str, level: str | int | None = None, default: str = "json") -> None:
    """Root logging for one process kind (idempotent): CHIMERA_LOG_FORMAT, else `default`."""
    root = logging.getLogger()
    root.setLevel(level or os.environ.get("CHIMERA_LOG_LEVEL", "INFO").upper())
    handler = logging.StreamHandler()
    json_lines = os.environ.get("CHIMERA_LOG_FORMAT", default) == "json"
    handler.setFormatter(JsonFormatter(service) if json_lines else logging.Formatter(TEXT))
    root.handlers[:] = [handler]


def dict_config(service: str, level: str = "INFO") -> dict:
    """A logging.config dict with the JSON formatter (for Faust's `logging_config`, which
    replaces its own colour console set-up)."""
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": "topics.logs.JsonFormatter", "service": service}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
            "root": {"level": level, "handlers": ["console"]}}
