"""Structured logs (topics/logs.py): JSON lines when asked, with the ids a record carries."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CODE = ("import logging; from topics import logs; logs.setup('executor', default='text'); "
        "logging.getLogger('chimera.executor').warning('task done', extra={'plan_id': 'p1', 'trace_id': 't1'})")


def _run(env: dict) -> str:
    run = subprocess.run([sys.executable, "-c", CODE], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
    assert run.returncode == 0, run.stderr
    return run.stderr.strip()


def test_json_lines_when_chimera_log_format_is_json_with_the_records_ids():
    line = json.loads(_run({"CHIMERA_LOG_FORMAT": "json"}))
    assert line["service"] == "executor" and line["level"] == "warning" and line["message"] == "task done"
    assert line["plan_id"] == "p1" and line["trace_id"] == "t1" and line["logger"] == "chimera.executor"


def test_plain_lines_by_default_for_the_executor():
    out = _run({"CHIMERA_LOG_FORMAT": None})
    assert out.endswith("chimera.executor WARNING task done") and not out.startswith("{")


def test_the_deployments_ask_every_process_kind_for_json_lines():
    cm = [d for d in yaml.safe_load_all((REPO / "infra/k8s/namespace.yaml").read_text()) if d["kind"] == "ConfigMap"]
    assert cm[0]["data"]["CHIMERA_LOG_FORMAT"] == "json"
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    for name in ("planner", "executor", "sinks"):
        assert services[name]["environment"]["CHIMERA_LOG_FORMAT"] == "json", name
