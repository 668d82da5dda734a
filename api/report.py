"""`chimera report`: the Grafana panels' queries rendered to PNG charts and one HTML page, for
people without Grafana. Same SQL, same macro expansion (api/dashboards.py), same ClickHouse."""
from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

from api.dashboards import Panel, expand, panels


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _chart(panel: Panel, cols: list[str], rows: list[tuple], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=90)
    nums = [i for i, v in enumerate(rows[0]) if _numeric(v)]
    labels = [i for i, v in enumerate(rows[0]) if not _numeric(v) and not isinstance(v, dt.datetime)]
    if panel.type == "timeseries" and isinstance(rows[0][0], dt.datetime):
        if labels:   # long format: one line per label value (status, topic, category)
            series: dict[str, list] = {}
            for r in rows:
                series.setdefault(str(r[labels[0]]), []).append((r[0], r[nums[0]]))
            for name, pts in series.items():
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        else:
            for i in nums:
                ax.plot([r[0] for r in rows], [r[i] for r in rows], marker="o", label=cols[i])
        ax.legend(fontsize=7)
        fig.autofmt_xdate()
    elif panel.type == "stat":
        ax.axis("off")
        ax.text(0.5, 0.5, f"{rows[0][nums[0]]:,.2f}", ha="center", va="center", fontsize=36)
    else:
        names = [(" / ".join(str(r[i]) for i in labels) or str(n))[:48] for n, r in enumerate(rows[:30])]
        ax.barh(names[::-1], [r[nums[0]] for r in rows[:30]][::-1])
        ax.set_xlabel(cols[nums[0]])
        ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{panel.dashboard}: {panel.title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render(store, out: Path, from_s: int, to_s: int, interval_s: int = 300) -> Path:
    """Every panel's query on `store` (anything with query(sql) -> (cols, rows)): a PNG per panel
    with rows and an index.html with the charts and the first rows of each table."""
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>Chimera report</h1><p>{dt.datetime.fromtimestamp(from_s, dt.timezone.utc):%Y-%m-%d %H:%M} to "
             f"{dt.datetime.fromtimestamp(to_s, dt.timezone.utc):%Y-%m-%d %H:%M} UTC</p>"]
    current = None
    for panel in panels():
        if panel.dashboard != current:
            current = panel.dashboard
            parts.append(f"<h2>{html.escape(current)}</h2>")
        cols, rows = store.query(expand(panel.sql, from_s, to_s, interval_s))
        parts.append(f"<h3>{html.escape(panel.title)}</h3>")
        if not rows:
            parts.append("<p><em>no data in this window</em></p>")
            continue
        if any(_numeric(v) for v in rows[0]):
            name = f"{_slug(panel.dashboard)}--{_slug(panel.title)}.png"
            _chart(panel, cols, rows, out / name)
            parts.append(f'<img src="{name}" alt="{html.escape(panel.title)}">')
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows[:20])
        parts.append(f"<details><summary>{len(rows)} rows</summary><table><tr>{head}</tr>{body}</table></details>")
    page = out / "index.html"
    page.write_text("<!doctype html><meta charset='utf-8'><title>Chimera report</title>"
                    "<style>body{font-family:sans-serif;max-width:60em;margin:auto}td,th{padding:0 .5em}</style>"
                    + "\n".join(parts))
    return page
