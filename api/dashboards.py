"""The Grafana dashboards (infra/grafana/dashboards/*.json) as queries this codebase can run:
the grafana-clickhouse-datasource macros expanded the way the plugin expands them, so the
same panel SQL runs on ClickHouse (chdb here) in tests and in `chimera report`. Prometheus
panels (lag, dead-letter rates, sandbox time) are listed apart: no Prometheus runs here."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parent.parent / "infra" / "grafana" / "dashboards"


@dataclass(frozen=True)
class Panel:
    dashboard: str
    title: str
    type: str          # timeseries, table, piechart, barchart, stat
    sql: str


CLICKHOUSE, PROMETHEUS = "grafana-clickhouse-datasource", "prometheus"


def _targets(folder: Path, kind: str):
    for path in sorted(folder.glob("*.json")):
        dash = json.loads(path.read_text())
        for p in dash["panels"]:
            if p["datasource"]["type"] == kind:
                for t in p.get("targets", []):
                    yield dash["title"], p, t


def panels(folder: Path = DASHBOARDS) -> list[Panel]:
    """The ClickHouse panels' queries (what tests and `chimera report` run on ClickHouse)."""
    return [Panel(dash, p["title"], p["type"], t["rawSql"]) for dash, p, t in _targets(folder, CLICKHOUSE)]


def prometheus_queries(folder: Path = DASHBOARDS) -> list[Panel]:
    """The Prometheus panels' PromQL (live figures no table holds: lag, rates, sandbox time);
    `sql` holds the expression. Checked against the workers' registries, not run here."""
    return [Panel(dash, p["title"], p["type"], t["expr"]) for dash, p, t in _targets(folder, PROMETHEUS)]


def expand(sql: str, from_s: int, to_s: int, interval_s: int) -> str:
    """The plugin's macros: $__timeFilter(col), $__timeFilter_ms(col), $__timeInterval(col),
    $__timeInterval_ms(col), $__fromTime, $__toTime, $__interval_s."""
    sql = re.sub(r"\$__timeFilter_ms\(([^)]+)\)",
                 lambda m: f"{m[1]} >= fromUnixTimestamp64Milli({from_s * 1000}) AND "
                           f"{m[1]} <= fromUnixTimestamp64Milli({to_s * 1000})", sql)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)",
                 lambda m: f"{m[1]} >= toDateTime({from_s}) AND {m[1]} <= toDateTime({to_s})", sql)
    sql = re.sub(r"\$__timeInterval_ms\(([^)]+)\)",
                 lambda m: f"toStartOfInterval(toDateTime64({m[1]}, 3), INTERVAL {interval_s * 1000} millisecond)", sql)
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)",
                 lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {interval_s} second)", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    sql = sql.replace("$__interval_s", str(interval_s))
    if "$__" in sql:
        raise ValueError(f"unexpanded macro in: {sql}")
    return sql
