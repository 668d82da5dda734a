"""infra/prometheus/alerts.yml: every rule parses, and every metric its expressions name is one
the workers really export (their prometheus_client registry, as /metrics serves it).
promtool cannot be installed here; this checks what promtool's `check rules` would not either:
that no alert watches a metric nobody exports."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from api.dashboards import prometheus_queries

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "alerts.yml"
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
