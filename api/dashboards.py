"""The Grafana dashboards (infra/grafana/dashboards/*.json) as queries this codebase can run:
the grafana-clickhouse-datasource macros expanded the way the plugin expands them, so the
same panel SQL runs on ClickHouse (chdb here) in tests and in `chimera report`."""
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


def panels(folder: Path = DASHBOARDS) -> list[Panel]:
    out = []
    for path in sorted(folder.glob("*.json")):
        dash = json.loads(path.read_text())
        for p in dash["panels"]:
            for t in p.get("targets", []):
                out.append(Panel(dash["title"], p["title"], p["type"], t["rawSql"]))
    return out


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
