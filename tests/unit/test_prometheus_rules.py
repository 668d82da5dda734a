"""infra/prometheus/: promtool (built from the Go module proxy by `make install`) checks the rules
and the scrape config and evaluates the alerts on made-up series (alerts_test.yml); and every
metric the rules and the Grafana panels on Prometheus name is one the workers really export
(their prometheus_client registry, as /metrics serves it), which promtool cannot know."""
from __future__ import annotations

import re
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from api.dashboards import prometheus_queries

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "infra" / "prometheus" / "alerts.yml"
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum"),
            "gauge": ("",), "info": ("_info",), "unknown": ("",)}


def exported() -> set[str]:
    """Sample names every worker kind's registry serves (label-less or not yet observed too)."""
    import executor.service  # noqa: F401 - the executor's metrics
    import sinks.base  # noqa: F401 - the sinks'
    import streams.planner  # noqa: F401 - the planner's (streams.app, .metrics, .memory, .watchdog)
    names = set()
    for fam in REGISTRY.collect():
        names.update(fam.name + s for s in SUFFIXES.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or labels)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)                  # strings
    e = re.sub(r"\{[^}]*\}", "", e)                             # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                            # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    found = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if m.group() in KEYWORDS or rest.startswith("("):
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue                                            # 1e9, 0.5
        found.add(m.group())
    return found


def _rules():
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_rules_parse_and_are_complete():
    rules = _rules()
    assert len(rules) >= 10
    for r in rules:
        assert r["alert"].startswith("Chimera") and r["expr"].strip() and r["labels"]["severity"] in (
            "info", "warning", "critical"), r
        assert r["annotations"]["summary"]


def test_metric_name_extraction():
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y"}[5m]))) > 2') == {"a_bucket"}
    assert metric_names("sum(rate(b_total[5m])) > 0 and c == 0") == {"b_total", "c"}


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_every_alert_watches_exported_metrics(rule):
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    missing = names - exported()
    assert not missing, f"{rule['alert']} watches {missing}, which no worker exports"


@pytest.mark.parametrize("panel", prometheus_queries(), ids=lambda p: f"{p.dashboard}/{p.title}")
def test_every_prometheus_panel_shows_exported_metrics(panel):
    """The Grafana panels on the Prometheus datasource (infra/grafana/dashboards) name metrics
    the workers export; Grafana's own `$__rate_interval` stands for a range."""
    names = metric_names(panel.sql.replace("$__rate_interval", "5m"))
    assert names, panel.sql
    assert not names - exported(), f"{panel.title} shows {names - exported()}, which no worker exports"


def test_the_seed_metric_names_are_exported():
    seeds = {"layer2_goals_received_total", "layer2_plans_created_total", "layer2_plan_progress_percentage",
             "layer2_risks_identified_total", "layer2_resource_allocations_successful_total",
             "layer2_planning_duration_seconds_bucket", "layer2_task_decomposition_duration_seconds_bucket",
             "layer2_risk_assessment_duration_seconds_bucket", "layer2_planning_errors_total",
             "layer2_validation_errors_total", "layer2_integration_errors_total", "chimera_consumer_lag"}
    assert seeds <= exported(), seeds - exported()


# -- promtool ----------------------------------------------------------------------------------

def _promtool() -> str:
    found = shutil.which("promtool") or str(REPO / ".cache" / "bin" / "promtool")
    if not Path(found).exists():
        why = "promtool is not built (make install: go install .../cmd/promtool into .cache/bin)"
        if os.environ.get("CI"):
            pytest.fail(why)    # `make test` builds it: in CI a missing promtool is a broken install
        pytest.skip(why)
    return found


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_checks_the_rules():
    run = _run("check", "rules", str(RULES))
    assert run.returncode == 0 and "SUCCESS" in run.stdout + run.stderr, run.stdout + run.stderr


def test_promtool_checks_the_scrape_config(tmp_path):
    """The config names the rules where the compose file mounts them (/etc/prometheus): here
    it points at the repository's file instead, so promtool checks those too."""
    cfg = yaml.safe_load((RULES.parent / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
    cfg["rule_files"] = [str(RULES)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    run = _run("check", "config", str(tmp_path / "prometheus.yml"))
    assert run.returncode == 0 and "SUCCESS" in run.stdout + run.stderr, run.stdout + run.stderr


def test_promtool_evaluates_the_alerts_on_series():
    """alerts_test.yml: sink paused, consumer lag, executor failures, planning stalled, goal to
    plan p95, each firing when it should and (most) silent when it should not."""
    run = _run("test", "rules", str(RULES.parent / "alerts_test.yml"))
    assert run.returncode == 0 and "SUCCESS" in run.stdout + run.stderr, run.stdout + run.stderr
    tested = {t["alertname"] for case in yaml.safe_load((RULES.parent / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"]}
    assert len(tested) >= 2 and tested <= {r["alert"] for r in _rules()}, tested


def test_promtool_refuses_a_broken_rule_and_an_alert_that_does_not_fire(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(x[5m]) > \n")
    assert _run("check", "rules", str(bad)).returncode != 0
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    wrong = tmp_path / "wrong_test.yml"
    wrong.write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": 'chimera_sink_paused{sink="clickhouse"}', "values": "0x10"}],
        "alert_rule_test": [{"eval_time": "6m", "alertname": "ChimeraSinkPaused", "exp_alerts": [
            {"exp_labels": {"severity": "critical", "sink": "clickhouse"}}]}]}]}))
    run = _run("test", "rules", str(wrong), cwd=tmp_path)
    assert run.returncode != 0 and "ChimeraSinkPaused" in run.stdout + run.stderr, run.stdout + run.stderr
