"""PSPLIB benchmark for processors.scheduling.

    python -m bench.psplib                      # default sample of j30/j60/j120 (a few minutes)
    python -m bench.psplib --full               # every instance (hours at 5 s per method!)
    python -m bench.psplib --dir DIR --budget 1 5 --sample 40 --json
    python -m bench.psplib --throughput         # only the planner-throughput section

Deviation is measured against the upper bound in DIR/optimum.csv (`problem,optimum`,
optimum an int or `lb..ub`): dev = (makespan - ub) / ub * 100, matched = makespan <= ub.
Without optimum.csv the reference is the instance's critical-path/energy lower bound.
Every method runs in the same process, one after the other, so ratios are like for like.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

from processors.scheduling.sgs import _net
from processors.scheduling import (Project, anytime, cpsat, fast_schedule, is_feasible,
                                   lft_schedule, parse_sm)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOTS = [REPO.parent / "shared" / "data" / "psplib", Path("/work/shared/data/psplib")]
# default sample sizes per set: keeps `make bench` (budgets 1 s and 5 s) to roughly <= 10 min
DEFAULT_SAMPLE = {"j30": 40, "j60": 10, "j120": 16}
THROUGHPUT_ITERATIONS = 1   # the planner's cheap fast-path config: LFT pass + one FBI round


def load_optimum(d: Path) -> dict[str, int]:
    f = d / "optimum.csv"
    if not f.exists():
        return {}
    out = {}
    with f.open() as fh:
        for row in csv.DictReader(fh):
            out[row["problem"].strip()] = int(row["optimum"].strip().split("..")[-1])
    return out


def pick(files: list[Path], sample: int | None, limit: int | None) -> list[Path]:
    if limit:
        files = files[:limit]
    if sample and sample < len(files):
        files = [files[i * len(files) // sample] for i in range(sample)]
    return files


def run_set(name: str, files: list[Path], optimum: dict[str, int], budgets: list[float],
            workers: int, progress: bool) -> list[dict]:
    projects = [(f.name, parse_sm(f.read_text())) for f in files]
    methods = ["fast"] + [m for b in budgets for m in (f"anytime@{b:g}s", f"cpsat@{b:g}s")]
    res: dict[str, list[tuple[float, bool, float]]] = {m: [] for m in methods}
    ref_kind = "best-known" if optimum else "lower bound"
    for i, (fname, p) in enumerate(projects):
        ref = optimum.get(fname) or p.lower_bound
        for m in methods:
            _net.cache_clear()  # every method starts cold: no reuse of another method's work
            t0 = time.perf_counter()
            if m == "fast":
                s = fast_schedule(p)
            else:
                b = float(m.split("@")[1][:-1])
                s = anytime(p, budget_s=b, workers=workers) if m.startswith("anytime") else \
                    cpsat(p, budget_s=b, workers=workers)
            dt = time.perf_counter() - t0
            if not is_feasible(p, s.starts):
                raise SystemExit(f"{name}/{fname}: {m} returned an infeasible schedule")
            res[m].append(((s.makespan - ref) / ref * 100 if ref else 0.0, s.makespan <= ref, dt))
        if progress:
            print(f"  [{name} {i + 1}/{len(projects)}] {fname}", file=sys.stderr, flush=True)
    rows = []
    for m in methods:
        r = res[m]
        rows.append({
            "set": name,
            "method": m,
            "budget_s": float(m.split("@")[1][:-1]) if "@" in m else None,
            "instances": len(r),
            "avg_deviation_pct": round(statistics.mean(x[0] for x in r), 3) if r else None,
            "matched_pct": round(100 * sum(x[1] for x in r) / len(r), 1) if r else None,
            "median_ms": round(statistics.median(x[2] for x in r) * 1e3, 3) if r else None,
            "reference": ref_kind,
        })
    return rows


def throughput(files: list[Path], seconds: float = 2.0) -> dict:
    """Fast-path plans/s on one core, a fresh Project per plan (as the planner does),
    against the plain single-pass LFT serial SGS measured in the same run."""
    raw = []
    for f in files:
        p = parse_sm(f.read_text())
        raw.append((p.durations, p.successors, p.demands, p.capacities))

    def rate(fn) -> float:
        done, t0 = 0, time.perf_counter()
        while True:
            for r in raw:
                fn(Project(*r))
            done += len(raw)
            el = time.perf_counter() - t0
            if el >= seconds:
                return done / el

    base = rate(lft_schedule)
    fast = rate(lambda p: fast_schedule(p, iterations=THROUGHPUT_ITERATIONS))
    return {"method": f"throughput fast(iterations={THROUGHPUT_ITERATIONS})", "instances": len(raw),
            "plans_per_s": round(fast), "baseline": "lft single-pass sgs",
            "baseline_plans_per_s": round(base), "ratio_vs_baseline": round(fast / base, 3)}


def print_table(name: str, rows: list[dict]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain aligned text
        print(f"\n{name}")
        print(f"{'method':<16}{'instances':>10}{'avg dev %':>11}{'matched %':>11}{'median ms':>12}")
        for r in rows:
            print(f"{r['method']:<16}{r['instances']:>10}{r['avg_deviation_pct']:>11.2f}"
                  f"{r['matched_pct']:>11.1f}{r['median_ms']:>12.2f}")
        return
    t = Table(title=f"{name} (deviation vs {rows[0]['reference']})")
    for c in ("method", "instances", "avg dev %", "matched %", "median ms"):
        t.add_column(c, justify="left" if c == "method" else "right")
    for r in rows:
        t.add_row(r["method"], str(r["instances"]), f"{r['avg_deviation_pct']:.2f}",
                  f"{r['matched_pct']:.1f}", f"{r['median_ms']:.2f}")
    Console().print(t)


def ratio_lines(rows: list[dict]) -> list[str]:
    by = {r["method"]: r for r in rows}
    out = []
    for r in rows:
        if not r["method"].startswith("anytime@"):
            continue
        c = by.get(r["method"].replace("anytime", "cpsat"))
        if not c:
            continue
        a, b = r["avg_deviation_pct"], c["avg_deviation_pct"]
        ratio = f"{a / b:.2f}x" if b else ("1.00x" if a == b else "n/a (cpsat dev 0)")
        out.append(f"  {r['set']}: {r['method']} avg dev {a:.2f}% vs {c['method']} {b:.2f}% "
                   f"-> ratio {ratio}, difference {a - b:+.2f} pp")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.psplib", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", action="append", type=Path, help="folder of .sm files (repeatable)")
    ap.add_argument("--budget", type=float, nargs="+", default=[1.0, 5.0], help="seconds per instance")
    ap.add_argument("--json", action="store_true", help="one JSON object per line per method")
    ap.add_argument("--limit", type=int, help="first N instances (sorted)")
    ap.add_argument("--sample", type=int, help="N instances evenly spread over the sorted list")
    ap.add_argument("--full", action="store_true", help="every instance (no default sampling)")
    ap.add_argument("--workers", type=int, default=2, help="CP-SAT workers")
    ap.add_argument("--throughput", action="store_true", help="only the throughput section")
    ap.add_argument("--no-throughput", action="store_true", help="skip the throughput section")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    a = ap.parse_args(argv)

    if a.dir:
        sets = [(d.name, d) for d in a.dir]
    else:
        root = next((r for r in DEFAULT_ROOTS if r.exists()), None)
        if root is None:
            raise SystemExit("no PSPLIB data found; pass --dir")
        sets = [(s, root / s) for s in ("j30", "j60", "j120") if (root / s).exists()]

    all_rows = []
    if not a.throughput:
        for name, d in sets:
            files = sorted(d.glob("*.sm"))
            sample = a.sample if a.sample else (None if a.full or a.dir else DEFAULT_SAMPLE.get(name))
            files = pick(files, sample, a.limit)
            if not files:
                continue
            rows = run_set(name, files, load_optimum(d), a.budget, a.workers, not a.quiet and not a.json)
            all_rows += rows
            if a.json:
                for r in rows:
                    print(json.dumps(r), flush=True)
            else:
                print_table(f"{name}: {len(files)} instances, budgets {a.budget}", rows)
                for line in ratio_lines(rows):
                    print(line)

    if not a.no_throughput:
        tsets = [d for name, d in sets if name == "j30"] or [d for _, d in sets]
        files = pick(sorted(tsets[0].glob("*.sm")), 100, None) if tsets else []
        if files:
            tp = throughput(files)
            if a.json:
                print(json.dumps(tp), flush=True)
            else:
                print(f"\nthroughput ({len(files)} instances of {tsets[0].name}, one core, fresh Project per plan):")
                print(f"  fast path (iterations={THROUGHPUT_ITERATIONS}): {tp['plans_per_s']:,} plans/s; "
                      f"baseline plain LFT SGS: {tp['baseline_plans_per_s']:,} plans/s "
                      f"-> {tp['ratio_vs_baseline']:.2f}x")


if __name__ == "__main__":
    main()
