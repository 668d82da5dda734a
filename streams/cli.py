"""`chimera`: run the stack, the demo, produce goals, tail topics, approve plans."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from processors.ids import plan_id as derive_plan_id
from streams import client, codec, samples, services
from streams.settings import load_stores
from topics import registry as T
from topics.admin import BrokerUnreachable, create_topics, list_topics
from topics.serde import SerdeError

app = typer.Typer(help="Chimera: goals in, executable plans out, on Kafka.", no_args_is_help=True)
topics_app = typer.Typer(help="Create or list the Chimera topics.", no_args_is_help=True)
produce_app = typer.Typer(help="Produce records to Chimera topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(produce_app, name="produce")
train_app = typer.Typer(help="Train the learned models (LoRA with peft, on the CPU) and hand them to Triton.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _run(coro):
    try:
        return asyncio.run(coro)
    except BrokerUnreachable as exc:
        _fail(str(exc))
    except (SerdeError, KeyError, ValueError) as exc:
        _fail(str(exc))


@topics_app.command("create")
def topics_create() -> None:
    """Create every Chimera topic that is missing (idempotent)."""
    created = _run(create_topics(_bootstrap()))
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@topics_app.command("list")
def topics_list() -> None:
    """Topics on the broker with their partition counts."""
    for name, parts in sorted(_run(list_topics(_bootstrap())).items()):
        console.print(f"{name}\t{parts}")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _load_jsonl(path: Path) -> list[dict]:
    goals = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                goals.append(json.loads(line))
            except json.JSONDecodeError as exc:
                _fail(f"{path}:{n}: not JSON: {exc}")
    return goals


@produce_app.command("goals")
def produce_goals(file: Optional[Path] = typer.Argument(None, help="JSON lines, one goal per line"),
                  sample: int = typer.Option(0, "--sample", help="produce N sample goals instead")) -> None:
    """Produce goals to goals.created (Avro, keyed by goal_id)."""
    if (file is None) == (sample == 0):
        _fail("give either FILE.jsonl or --sample N")
    goals = samples.sample_goals(sample, _now_ms()) if sample else _load_jsonl(file)
    for g in goals:
        g.setdefault("created_at_ms", _now_ms())
    n = _run(client.produce(_bootstrap(), T.GOALS_CREATED.name, [(g.get("goal_id", ""), g) for g in goals]))
    for g in goals:
        console.print(f"{g['goal_id']} -> {derive_plan_id(g['goal_id'])}")
    console.print(f"produced {n} goal(s) to {T.GOALS_CREATED.name}")


@app.command()
def tail(topic: str, from_beginning: bool = typer.Option(True, "--from-beginning/--latest"),
         idle: Optional[float] = typer.Option(None, help="stop after this many idle seconds")) -> None:
    """Print a topic's records, decoded, one JSON object per line (Ctrl-C stops)."""
    async def go():
        async for rec in client.read(_bootstrap(), topic, from_beginning=from_beginning, idle_timeout_s=idle):
            print(rec.as_json(), flush=True)
    try:
        _run(go())
    except KeyboardInterrupt:
        pass


def _actor() -> str:
    """Who the CLI acts as: the principal the broker authenticates (KAFKA_SASL_USERNAME over a
    SASL protocol), never a name typed on the command line; without SASL it says so. With the
    broker's ACLs on, only the API's principal may write approvals and control commands at all."""
    import getpass

    from topics import security
    return security.principal() or f"unauthenticated:{getpass.getuser()}"


@app.command()
def approve(plan: str, version: int = typer.Option(..., help="the version being approved"),
            reject: bool = False, reason: str = "") -> None:
    """Approve (or --reject) a plan version that waits for approval, as the authenticated principal."""
    record = {"plan_id": plan, "version": version, "decision": "REJECT" if reject else "APPROVE", "by": _actor(),
              "reason": reason, "decided_at_ms": _now_ms()}
    _run(client.produce(_bootstrap(), T.PLANS_APPROVALS.name, [(plan, record)]))
    console.print(f"{record['decision'].lower()} sent for {plan} v{version}")


def _control(command: str, plan: Optional[str], every: bool, reason: str) -> None:
    from streams import codec
    if (plan is None) == (not every):
        _fail("name one PLAN or --all")
    if command == "CANCEL" and plan is None:
        _fail("cancel names one plan")
    out = codec.control_record(command, plan, reason=reason, by=_actor(), at_ms=_now_ms())
    _run(client.produce(_bootstrap(), out.topic, [(out.key, out.value)]))
    console.print(f"{command} sent for {plan or 'every plan'}")


@app.command()
def stop(plan: Optional[str] = typer.Argument(None), every: bool = typer.Option(False, "--all"),
         reason: str = "") -> None:
    """Emergency stop: no new assignment for PLAN (or --all plans) until resumed; executors honour it too."""
    _control("STOP", plan, every, reason)


@app.command()
def resume(plan: Optional[str] = typer.Argument(None), every: bool = typer.Option(False, "--all"),
           reason: str = "") -> None:
    """Undo a stop of PLAN (or --all); for one plan it also releases a budget hold."""
    _control("RESUME", plan, every, reason)


@app.command()
def cancel(plan: str, reason: str = "") -> None:
    """Cancel PLAN: it ends CANCELLED, its resources are released."""
    _control("CANCEL", plan, False, reason)


async def _plan_history(bootstrap: str, plan: str, idle_s: float = 2.0) -> dict:
    """Everything the topics say about one plan (read from the beginning until quiet)."""
    seen: dict = {"plan": None, "update": None, "assigned": {}, "feedback": {}}
    for topic in (T.PLANS_CREATED.name, T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name, T.EXECUTION_FEEDBACK.name):
        async for rec in client.read(bootstrap, topic, idle_timeout_s=idle_s, deadline_s=30):
            if rec.key != plan or rec.value is None:
                continue
            v = rec.value
            if topic == T.PLANS_CREATED.name:
                seen["plan"] = v
            elif topic == T.PLANS_UPDATED.name:
                seen["update"], seen["plan"] = v, v["plan"]
            elif topic == T.TASKS_ASSIGNED.name:
                seen["assigned"][v["task"]["task_id"]] = v
            else:
                seen["feedback"][v["task_id"]] = v
    return seen


@app.command()
def status(plan: str, idle: float = typer.Option(2.0, help="seconds without records that end the read")) -> None:
    """One plan's tasks, their states, allocations and attempts, and its progress and variance."""
    h = _run(_plan_history(_bootstrap(), plan, idle))
    if h["plan"] is None:
        _fail(f"no plan {plan} on {_bootstrap()}")
    p, u = h["plan"], h["update"] or {}
    console.print(f"[bold]{plan}[/] v{p['version']} {p['approval']} status={u.get('status', 'ACTIVE')} "
                  f"reason={p['reason']!r}")
    console.print(f"progress {u.get('progress_pct', 0.0):.1f}%  variance {u.get('variance_hours', 0.0):+.2f} h  "
                  f"SPI {u.get('spi', 1.0):.2f}  CPI {u.get('cpi', 1.0):.2f}  PV {u.get('planned_value', 0.0):.2f}  "
                  f"EV {u.get('earned_value', 0.0):.2f}  AC {u.get('actual_cost', 0.0):.2f}  "
                  f"cost estimate {u.get('cost_estimate', 0.0):.2f}")
    table = Table("task", "start h", "finish h", "state", "done %", "attempt", "resource", "deadline")
    for t in p["tasks"]:
        tid = t["task_id"]
        a, fb = h["assigned"].get(tid), h["feedback"].get(tid)
        current = fb if fb and (not a or fb.get("attempt") in (None, a["attempt"])) else None
        state = ("STARTED" if current["status"] == "PROGRESS" else current["status"]) if current else (
            "ASSIGNED" if a else "-")
        pct = {"COMPLETED": "100"}.get(state, f"{current.get('progress_pct') or 0.0:.0f}" if current else "")
        deadline = time.strftime("%H:%M:%S", time.localtime(a["deadline_ms"] / 1000)) if a and a.get("deadline_ms") else ""
        table.add_row(tid, f"{t['start_hours']:.2f}", f"{t['finish_hours']:.2f}", state, pct,
                      str(a["attempt"]) if a else "", (a or {}).get("assigned_to") or "", deadline)
    console.print(table)


api_app = typer.Typer(help="The REST API: serve it (no subcommand) or manage its keys.", invoke_without_command=True)
keys_app = typer.Typer(help="API keys: hashed at rest in \\[api] keys_file, each bound to a tenant and a role.",
                       no_args_is_help=True)
api_app.add_typer(keys_app, name="keys")
app.add_typer(api_app, name="api")


@api_app.callback()
def api(ctx: typer.Context, host: Optional[str] = typer.Option(None, help="default: \\[api] host"),
        port: Optional[int] = typer.Option(None, help="default: \\[api] port")) -> None:
    """Serve the REST API (KAFKA_BOOTSTRAP must point at a broker); OpenAPI at /docs and /openapi.json."""
    if ctx.invoked_subcommand is None:
        from api.server import serve
        from streams import settings
        serve(settings.load(), host, port)


@keys_app.command("add")
def keys_add(tenant: str = typer.Option(...), role: str = typer.Option(..., help="viewer, planner, approver or admin"),
             principal: str = typer.Option("", help="who acts with this key (approvals name it)")) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    from api.keys import KeyStore
    from streams import settings
    store = KeyStore.load(settings.load().api.keys_file)
    try:
        key, record = store.add(tenant, role, principal)
    except ValueError as exc:
        _fail(str(exc))
    store.save()
    err.print(f"key {record.key_id} for tenant {tenant}, role {role}, principal {record.principal} "
              f"(stored hashed in {store.path}); shown once:")
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """Key ids, tenants, roles and principals (never a secret: none is stored)."""
    from api.keys import KeyStore
    from streams import settings
    for k in KeyStore.load(settings.load().api.keys_file).keys.values():
        console.print(f"{k.key_id}\t{k.tenant}\t{k.role}\t{k.principal}")


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Remove a key (a running API reads the file at start: restart it)."""
    from api.keys import KeyStore
    from streams import settings
    store = KeyStore.load(settings.load().api.keys_file)
    if not store.revoke(key_id):
        _fail(f"no key {key_id}")
    store.save()
    console.print(f"revoked {key_id}")


@app.command()
def report(since: str = typer.Option("24h", help="how far back: 30m, 6h, 7d, or an ISO time"),
           out: Path = typer.Option(Path("report"), help="folder for index.html and the PNG charts"),
           data_dir: Optional[Path] = typer.Option(None, help="the ClickHouse sink's chdb folder (default: [stores] "
                                                              "dir/clickhouse)"),
           interval: int = typer.Option(300, help="seconds per time bucket")) -> None:
    """The Grafana dashboards' panels rendered to PNG charts and one HTML page (ClickHouse as the sinks fill it)."""
    from api.report import render
    from sinks.clickhouse import reader
    now = int(time.time())
    units = {"m": 60, "h": 3600, "d": 86400}
    if since[-1:] in units and since[:-1].isdigit():
        start = now - int(since[:-1]) * units[since[-1]]
    else:
        try:
            start = int(datetime.fromisoformat(since).timestamp())
        except ValueError:
            _fail(f"--since {since!r}: give 30m, 6h, 7d or an ISO time")
    page = render(reader(data_dir), out, start, now, interval)
    console.print(f"report: {page}")


@app.command()
def worker(loglevel: str = "info") -> None:
    """Run one planner worker in the foreground (KAFKA_BOOTSTRAP must point at a broker)."""
    from streams.worker import main
    main(loglevel)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def executor(ctx: typer.Context) -> None:
    """Run a task executor: tasks.assigned -> WebAssembly sandbox -> execution.feedback
    (options: `chimera executor --help`)."""
    from executor.service import main as run_executor
    raise typer.Exit(run_executor(ctx.args))


@app.command()
def up(data_dir: Optional[Path] = typer.Option(None, help="keep broker data here across runs"),
       sinks: bool = typer.Option(True, help="also run the ClickHouse, Neo4j and Chroma sinks (data in [stores] dir)"),
       api: bool = typer.Option(True, help="also serve the REST API ([api] host and port)")) -> None:
    """Start a local broker (unless KAFKA_BOOTSTRAP is set), the topics, a worker, the sinks and the API;
    Ctrl-C stops all."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops everything like Ctrl-C
    stores = load_stores()
    folder = Path(stores.dir)
    with services.stack(data_dir=str(data_dir) if data_dir else None) as (bootstrap, w), ExitStack() as stack:
        if sinks:
            _start_sinks(stack, ["clickhouse", "neo4j", "chroma"], bootstrap, folder)
        if api:
            stack.enter_context(services.api_process(bootstrap, folder / "api.log"))
            console.print(f"API: see {folder / 'api.log'}; keys: chimera api keys add --tenant T --role R")
        _auto_train(stack, stores.clickhouse_dir, folder / "train.log")
        console.print(f"[green]up[/]: KAFKA_BOOTSTRAP={bootstrap}  worker log: {w.log_path}")
        console.print(f"in another shell: export KAFKA_BOOTSTRAP={bootstrap}; chimera tail plans.created")
        console.print("the worker is supervised: if it dies or stalls it is restarted")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping")


def _auto_train(stack, clickhouse: Path, log_path: Path, env: dict[str, str] | None = None):
    """With [triton] auto_train: the estimator's training watch in its own process (see `train
    estimator --watch`), and with [triton] decompose the decomposer's too (its log beside it),
    stopped with `stack`; the estimator watch's Popen, or None when off."""
    from streams import settings as S
    cfg = S.load().triton
    if not cfg.auto_train:
        return None
    proc = stack.enter_context(services.training_process(log_path, clickhouse, cfg.train_interval_s, env=env))
    console.print(f"auto-train: every {cfg.train_interval_s:g} s once {cfg.train_min_new_tasks} new tasks "
                  f"finished (log: {log_path})")
    if cfg.decompose:
        dlog = log_path.with_name(f"{log_path.stem}-decomposer{log_path.suffix}")
        stack.enter_context(services.training_process(dlog, clickhouse, cfg.train_interval_s, env=env,
                                                      model="decomposer"))
        console.print(f"auto-train: the decomposer too, once {cfg.decomposer_min_new_plans} new plans completed "
                      f"within budget and schedule (log: {dlog})")
    return proc


def _start_sinks(stack, names: list[str], bootstrap: str, data_dir: Path):
    """The sinks (each its own consumer group) inside `stack`; a local Neo4j unless [stores]
    neo4j_uri (NEO4J_URI)."""
    from sinks import service
    uri = load_stores().neo4j_uri
    if "neo4j" in names and not uri:
        from infra.neo4j import Neo4jServer
        uri = stack.enter_context(Neo4jServer(data_dir=data_dir / "neo4j")).uri
        console.print(f"Neo4j: NEO4J_URI={uri}")
    return stack.enter_context(service.running(names, bootstrap, data_dir=data_dir, neo4j_uri=uri))


@app.command()
def sink(names: list[str] = typer.Argument(..., help="clickhouse, neo4j, chroma or all"),
         data_dir: Optional[Path] = typer.Option(None, help="chdb, Chroma and (local) Neo4j data folders "
                                                            "(default: [stores] dir)"),
         seconds: Optional[float] = typer.Option(None, help="stop after this many seconds (default: Ctrl-C)")) -> None:
    """Run sinks (each its own consumer group) until Ctrl-C. Neo4j: NEO4J_URI, else a local Neo4j is started."""
    from sinks import service
    try:
        chosen = service.expand(names)
    except ValueError as exc:
        _fail(str(exc))
    from topics import logs, probes
    logs.setup("sinks", default="text")
    probes.serve_from_env()   # /metrics, /healthz (every sink thread alive), /readyz (set up, store reachable)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    data_dir = data_dir or Path(load_stores().dir)
    with ExitStack() as stack:
        svc = _start_sinks(stack, chosen, _bootstrap(), data_dir)
        console.print(f"[green]sinks running[/]: {', '.join(chosen)} (data in {data_dir}); Ctrl-C stops")
        started = time.monotonic()
        try:
            while all(svc.alive().values()) and (seconds is None or time.monotonic() - started < seconds):
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping")
        for name, r in svc.runners.items():
            console.print(f"{name}: {r.written} written, {r.dead_letters} dead letters, {r.retries} retries")


@app.command()
def replay(since: Optional[str] = typer.Option(None, "--from", help="ISO time or epoch ms"),
           until: Optional[str] = typer.Option(None, "--to", help="ISO time or epoch ms (default: now)"),
           plan: Optional[str] = typer.Option(None, "--plan", help="only this plan id"),
           speed: float = typer.Option(0.0, help="X times the recorded rate; 0: as fast as possible"),
           namespace: str = typer.Option("replay", help="topic prefix of the replayed outputs"),
           compare: bool = typer.Option(False, "--compare", help="print replayed vs recorded plans"),
           no_refine: bool = typer.Option(False, "--no-refine", help="skip CP-SAT refinement")) -> None:
    """Re-run planning over a past window into <namespace>.* topics, or --compare them with the recorded plans."""
    from streams import replay as R
    if compare:
        diffs = R.compare(_bootstrap(), namespace)
        table = Table(title=f"replay '{namespace}' vs recorded")
        for col in ("plan", "makespan h", "cost", "tasks", "changed"):
            table.add_column(col)
        for d in diffs:
            ch, n = d.changes, d.replayed
            table.add_row(d.plan_id[:13], _pair(ch, "makespan_hours", n["makespan_hours"]),
                          _pair(ch, "cost", n["cost"]["total"]), _pair(ch, "tasks", len(n["tasks"])),
                          "; ".join(f"{k}: {v[0]} -> {v[1]}" for k, v in ch.items()) or "same")
        console.print(table)
        console.print(f"{sum(1 for d in diffs if d.changes)} of {len(diffs)} plan(s) differ")
        return
    if since is None:
        _fail("give --from TIME (and --to TIME), or --compare")
    try:
        t0, t1 = R.parse_time(since), R.parse_time(until) if until else _now_ms()
    except ValueError as exc:
        _fail(f"bad time: {exc}")
    res = R.replay(_bootstrap(), t0, t1, namespace=namespace, plan=plan, speed=speed, refine=not no_refine,
                   progress=console.print)
    console.print(f"replayed {res.inputs} record(s) for {len(res.plans)} plan(s) into {namespace}.*: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(res.outputs.items())))
    for where, why in res.skipped[:20]:
        console.print(f"  skipped {where}: {why}")


def _pair(changes: dict, key: str, now) -> str:
    return f"{changes[key][0]} -> {changes[key][1]}" if key in changes else f"{now:g}"


REPLAN_TRIGGERS = ("failed_after_retries", "drift", "lost_capacity", "goal_changed")
DEMO_WORKER_ENV = {   # live plans at demo speed: seconds, not hours
    "PLANNING_RESOURCE_HEARTBEAT_TIMEOUT_SECONDS": "3", "PLANNING_RETRY_BASE_SECONDS": "1",
    "PLANNING_PROGRESS_INTERVAL_SECONDS": "0.5"}


def _demo_capabilities(sample: list[dict]) -> list[str]:
    """Every capability the sample goals' tasks may need: the templates' and those the strategies
    add themselves (phase gates need `review`, objective checks `qa`, resource pools `ops`),
    from decomposing each sample goal with every strategy. The demo's resources offer them."""
    from processors.decomposition import STRATEGIES, decompose
    found = set(_template_capabilities())
    for record in sample:
        goal = codec.goal_from_record(record)
        for strategy in (None, *STRATEGIES):
            found.update(c for t in decompose(goal, strategy).tasks for c in t.capabilities)
    return sorted(found)


def _template_capabilities() -> list[str]:
    """Every capability the decomposition templates ask for."""
    import tomllib
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "capabilities" and isinstance(v, list):
                    found.update(map(str, v))
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    for path in sorted((Path(__file__).resolve().parent.parent / "processors" / "templates").glob("*.toml")):
        walk(tomllib.loads(path.read_text()))
    return sorted(found)


def _demo_resources(now_ms: int, simulated: bool, caps: list[str]) -> list[dict]:
    """A spot pool with one slot, the cheapest resource, which goes silent after its first
    assignment (that task is reallocated, with a RESOURCE alert); with `simulated` (no real
    executors) also two clusters that streams/simulate.py plays. All with every capability."""

    def res(rid, cost, **capacity):
        return {"resource_id": rid, "kind": "agents", "capacities": capacity, "capabilities": caps, "available": True,
                "hourly_rate": cost, "updated_at_ms": now_ms, "free": dict(capacity), "health": "HEALTHY",
                "heartbeat_ms": now_ms}
    spot = res("demo-spot", 0.5, cpu=16.0, gpu=4.0, memory_gb=128.0, storage_gb=1000.0, agents=1.0)
    if not simulated:
        return [spot]
    return [spot, res("demo-cluster-a", 20.0, cpu=32.0, gpu=4.0, memory_gb=128.0, agents=6.0),
            res("demo-cluster-b", 30.0, cpu=32.0, gpu=4.0, memory_gb=128.0, agents=6.0)]


def _start_executors(stack: ExitStack, bootstrap: str, work: Path, caps: list[str]) -> list[str]:
    """Two real executors (executor/service.py, own processes) next to the planner: the only
    resources that answer, so every task of the sample goals really runs in the wasmtime sandbox.
    `demo-exec-1` offers every template capability at 2/h, `demo-exec-2` half of them at 1/h (so
    both run tasks: the cheaper one what it can, the other the rest, the allocator's capability
    match at work); the units they offer cover the sample goals' largest demands. Stopped and
    their resources tombstoned on exit."""
    spec = [("demo-exec-1", 2.0, caps), ("demo-exec-2", 1.0, caps[::2])]
    procs = []
    for eid, rate, offered in spec:
        cmd = [sys.executable, "-m", "executor.service", "--bootstrap", bootstrap, "--id", eid, "--slots", "4",
               "--heartbeat-s", "1", "--hourly-rate", str(rate), "--work-root", str(work / eid),
               "--capacity", "cpu=32", "--capacity", "gpu=4", "--capacity", "memory_gb=128",
               "--capacity", "storage_gb=1000"]
        for c in offered:
            cmd += ["--capability", c]
        log = open(work / f"{eid}.log", "w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      cwd=Path(__file__).resolve().parent.parent))

    def stop() -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        asyncio.run(client.produce(bootstrap, T.RESOURCES_AVAILABILITY.name, [(eid, None) for eid, _, _ in spec]))
    stack.callback(stop)
    return [eid for eid, _, _ in spec]


def _latest(run, pid: str, plan: dict) -> tuple[dict, dict]:
    """(the plan's newest version, its newest plans.updated record or {})."""
    ups = run.updates.get(pid) or []
    return (ups[-1]["plan"], ups[-1]) if ups else (run.created.get(pid, plan), {})


async def _live_demo(bootstrap: str, sample: list[dict], progress: Progress, timeout_s: float,
                     factor: float = 1.3, executors: tuple[str, ...] = ()) -> dict:
    """Resources announced, goals planned and run until every plan ended: the real `executors`
    run every task in the sandbox; the cheapest resource (simulated) goes silent after its first
    assignment (its task is reallocated, with a RESOURCE alert); plans waiting for a person are
    approved at their current version (as `chimera approve` would). Without real executors
    (DEMO_SIMULATED_ONLY) streams/simulate.py plays two clusters instead: one task fails once
    (retried), completed tasks took `factor` x their most likely hours. A live progress bar per
    plan."""
    from streams.simulate import ENDED, Simulation
    resources = _demo_resources(_now_ms(), simulated=not executors, caps=_demo_capabilities(sample))
    silent_rid = resources[0]["resource_id"]
    wanted = {derive_plan_id(g["goal_id"]): g for g in sample}
    chosen: dict = {}     # fail_pid, fail_task: who fails once

    def script(pid, tid, attempt, rid):
        if rid == silent_rid or rid in executors:   # a real executor answers its own assignments
            return "silent"
        if pid == chosen.get("fail_pid") and attempt == 1 and chosen.setdefault("fail_task", tid) == tid:
            return "fail"
        return "ok"

    hours = lambda a: round(a["task"]["estimate"]["most_likely"] * factor, 2)  # noqa: E731
    async with Simulation(bootstrap, resources, script, work_s=0.25, actual_hours=hours) as sim:
        def went_silent(a):
            if a["assigned_to"] == silent_rid and silent_rid not in sim.silent:
                sim.silent.add(silent_rid)
                chosen["silent_at"] = time.monotonic()
        sim.on_assignment = went_silent
        announce = progress.add_task(f"announcing {len(resources)} resources", total=None)
        await asyncio.sleep(1.5)   # the worker's global table has them before the goals arrive
        progress.update(announce, total=1, completed=1)
        await client.produce(bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in sample])
        await client.produce(bootstrap, T.GOALS_CREATED.name, [("bad-goal", b"{not avro}")])
        huge = {"goal_id": "demo-huge", "title": "1,000 tasks", "created_at_ms": _now_ms(),
                "tasks": [{"task_id": f"t{i}", "name": f"t{i}", "duration_hours": 1} for i in range(1000)]}
        await client.produce(bootstrap, T.GOALS_CREATED.name, [(huge["goal_id"], huge)])

        planning = progress.add_task("planning", total=len(wanted))
        plans: dict[str, dict] = {}
        async for rec in client.read(bootstrap, T.PLANS_CREATED.name, deadline_s=timeout_s,
                                     done=lambda: len(plans) == len(wanted)):
            if rec.value and rec.value["plan_id"] in wanted and rec.value["plan_id"] not in plans:
                plans[rec.value["plan_id"]] = rec.value
                progress.update(planning, completed=len(plans))
        if len(plans) < len(wanted):
            return {"plans": plans, "wanted": wanted}
        # a forged COMPLETED for a task never handed out (it has predecessors and nothing ran yet)
        forged = next(iter(plans))
        later = next((t for t in plans[forged]["tasks"] if t["depends_on"]), plans[forged]["tasks"][-1])
        await client.produce(bootstrap, T.EXECUTION_FEEDBACK.name, [(forged, {
            "event_id": "demo-forged", "plan_id": forged, "task_id": later["task_id"],
            "status": "COMPLETED", "reported_at_ms": _now_ms()})])
        # the memory story runs a decomposed plan to the end; another one has a task failing once
        decomposed = [pid for pid in plans if not wanted[pid].get("tasks")]
        done_pid = decomposed[0] if decomposed else None
        if not executors:       # a real executor's tasks fail for real reasons only
            chosen["fail_pid"] = next((pid for pid in plans if pid not in (done_pid, forged)), None)

        bars = {pid: progress.add_task(wanted[pid]["title"][:40], total=100.0) for pid in plans}
        approved: set[tuple[str, int]] = set()

        def refresh(run) -> bool:
            for pid, bar in bars.items():
                plan, up = _latest(run, pid, plans[pid])
                state = run.status.get(pid) or ("PENDING" if plan["approval"] == "PENDING" else "ACTIVE")
                progress.update(bar, completed=up.get("progress_pct", 0.0),
                                description=f"{wanted[pid]['title'][:34]:34} v{plan['version']:<3} {state:9}")
                if plan["approval"] == "PENDING" and run.status.get(pid) not in ENDED \
                        and (pid, plan["version"]) not in approved:
                    approved.add((pid, plan["version"]))
                    record = {"plan_id": pid, "version": plan["version"], "decision": "APPROVE", "by": "demo",
                              "reason": "", "decided_at_ms": _now_ms()}
                    t = asyncio.get_running_loop().create_task(sim.send(T.PLANS_APPROVALS.name, pid, record))
                    sim._tasks.add(t)
                    t.add_done_callback(sim._tasks.discard)
            return all(run.status.get(p) in ENDED for p in bars)
        started = time.monotonic()
        run = await sim.until(set(plans), done=refresh, timeout_s=timeout_s)
        refresh(run)
        took = time.monotonic() - started
    others = {}
    for topic in (T.GOALS_CREATED.dlq,):
        others[topic] = [r async for r in client.read(bootstrap, topic, idle_timeout_s=3.0, deadline_s=20)]
    letters: list = []  # the forged feedback's dead letter: wait for it, not for a quiet topic
    async for r in client.read(bootstrap, T.EXECUTION_FEEDBACK.dlq, deadline_s=20, done=lambda: bool(letters)):
        if r.key == forged and r.value and r.value.get("event_id") == "demo-forged":
            letters.append(r)
    others[T.EXECUTION_FEEDBACK.dlq] = letters
    ran: list[dict] = []    # terminal feedback of the demo's plans (real executors' and simulated)
    if executors:
        async for r in client.read(bootstrap, T.EXECUTION_FEEDBACK.name, idle_timeout_s=2.0, deadline_s=20):
            v = r.value
            if v and v["plan_id"] in plans and v["status"] in ("COMPLETED", "FAILED", "CANCELLED") \
                    and v.get("event_id") != "demo-forged":
                ran.append(v)
    return {"plans": plans, "wanted": wanted, "run": run, "seconds": took, "silent": silent_rid, "executed": ran,
            "executors": list(executors),
            "approved": sorted({p for p, _ in approved}), "done_pid": done_pid,
            "failed": (chosen["fail_pid"], chosen["fail_task"]) if "fail_task" in chosen else None, **others}


def _ran_by(v: dict) -> str | None:
    """The executor a terminal feedback record names (executor/service.py writes it into every
    COMPLETED's JSON and every FAILED / CANCELLED message), else None (simulated)."""
    if v["status"] == "COMPLETED":
        try:
            return json.loads(v.get("message") or "").get("executor")
        except (ValueError, AttributeError):
            return None
    m = re.search(r"\(executor ([\w.:-]+)", v.get("message") or "")
    return m.group(1) if m else None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _executed_summary(result: dict) -> None:
    """Per executor: tasks completed / failed / cancelled in the sandbox, time per task (p50 and
    max: the sandbox's wall time, and assignment to terminal feedback), failures with reasons;
    then whether every task of every sample plan ended COMPLETED in the sandbox."""
    table = Table(title="Tasks run in the wasmtime sandbox by the real executors")
    for col in ("executor", "completed", "failed", "cancelled", "sandbox ms p50 / max",
                "assigned -> done s p50 / max", "modules"):
        table.add_column(col)
    real = set(result["executors"])
    assigned_at = {(a["plan_id"], a["task"]["task_id"], a["attempt"]): a["assigned_at_ms"]
                   for a in result["run"].assignments}
    rows: dict[str, dict] = {e: {"COMPLETED": 0, "FAILED": 0, "CANCELLED": 0, "ms": [], "turn": [], "modules": {}}
                             for e in real}
    failures, done_on = [], {}
    for v in result.get("executed", []):
        who = _ran_by(v)
        if who not in real:
            continue
        row = rows[who]
        row[v["status"]] += 1
        at = assigned_at.get((v["plan_id"], v["task_id"], v["attempt"]))
        if at is not None:
            row["turn"].append(max(0.0, (v["reported_at_ms"] - at) / 1000))
        if v["status"] == "COMPLETED":
            msg = json.loads(v["message"])
            row["ms"].append(msg["wall_s"] * 1000)
            row["modules"][msg["module"]] = row["modules"].get(msg["module"], 0) + 1
            done_on[(v["plan_id"], v["task_id"])] = who
        else:
            failures.append(f"{who}: {v['plan_id'][:13]} {v['task_id']} attempt {v['attempt']} {v['status']}: "
                            f"{v['message'][:110]}")
    span = lambda xs, f: f"{f(_pct(xs, 0.5))} / {f(max(xs))}" if xs else "-"  # noqa: E731
    for e in sorted(rows):
        r = rows[e]
        table.add_row(e, str(r["COMPLETED"]), str(r["FAILED"]), str(r["CANCELLED"]),
                      span(r["ms"], lambda x: f"{x:.1f}"), span(r["turn"], lambda x: f"{x:.2f}"),
                      ", ".join(f"{m} {n}" for m, n in sorted(r["modules"].items())))
    console.print(table)
    console.print(f"failures in the sandbox: {len(failures)}" + (" (with reasons):" if failures else ""))
    for line in failures[:12]:
        console.print(f"  [yellow]{line}[/]")
    tasks = {(pid, t["task_id"]) for pid in result["plans"]
             for t in _latest(result["run"], pid, result["plans"][pid])[0]["tasks"]}
    ran = sum(1 for k in tasks if k in done_on)
    colour = "green" if ran == len(tasks) else "red"
    console.print(f"[{colour}]sample goals: {ran} of {len(tasks)} tasks COMPLETED in the sandbox on the two "
                  f"executors[/]" + ("" if ran == len(tasks) else
                                     f"; not: {', '.join(f'{p[:13]}/{t}' for p, t in sorted(tasks - set(done_on))[:8])}"))


def _summary(result: dict) -> None:
    run = result["run"]
    table = Table(title="Plans")
    for col in ("goal", "plan", "strategy", "estimates", "tasks", "makespan h", "refined h", "cost", "approval", "risks",
                "alerts", "assigned"):
        table.add_column(col)
    for pid, plan in result["plans"].items():
        ups = [u["plan"] for u in run.updates.get(pid, [])]
        refined = min((u["makespan_hours"] for u in ups if u["reason"].startswith("refined")), default=None)
        approvals = [u["approval"] for u in ups if u["approval"] != "PENDING"]
        table.add_row(result["wanted"][pid]["title"][:40], pid[:13], plan["strategy"],
                      plan.get("estimates_source", "heuristic"), str(len(plan["tasks"])),
                      f"{plan['makespan_hours']:g}", f"{refined:g}" if refined is not None else "-",
                      f"{plan['cost']['total']:,.0f}", approvals[-1] if approvals else plan["approval"],
                      str(len(plan["risks"])), str(sum(1 for a in run.alerts if a["plan_id"] == pid)),
                      str(sum(1 for a in run.assignments if a["plan_id"] == pid)))
    console.print(table)

    played = "real executors" if result.get("executors") else "simulated executors"
    live = Table(title=f"Live plans ({result['seconds']:.0f} s of {played})",
                 caption="Tasks planned in hours ran in milliseconds and report the time they really took: "
                         "little was planned by now (PV) and little spent (AC) for all the work done (EV), "
                         "so SPI and CPI far above 1 are what compressed time gives" if result.get("executors") else None)
    for col in ("plan", "status", "progress", "SPI", "CPI", "AC", "cost est.", "versions", "attempts", "retries",
                "reallocated", "replans (trigger)"):
        live.add_column(col)
    for pid in result["plans"]:
        _, up = _latest(run, pid, result["plans"][pid])
        mine = [a for a in run.assignments if a["plan_id"] == pid]
        retries = sum(1 for a in mine if a["attempt"] > 1)
        on: dict[str, list[str]] = {}
        for a in sorted(mine, key=lambda a: a["attempt"]):
            on.setdefault(a["task"]["task_id"], []).append(a["assigned_to"] or "")
        moved = sum(1 for rids in on.values() if len(set(rids)) > 1)
        replans = [u["trigger"] for u in run.updates.get(pid, []) if u["trigger"] in REPLAN_TRIGGERS]
        live.add_row(pid[:13], run.status.get(pid, "ACTIVE"), f"{up.get('progress_pct', 0.0):.0f}%",
                     f"{up.get('spi', 1.0):.2f}", f"{up.get('cpi', 1.0):.2f}", f"{up.get('actual_cost', 0.0):,.4g}",
                     f"{up.get('cost_estimate', 0.0):,.4g}", str(len(run.updates.get(pid, [])) + 1), str(len(mine)),
                     str(retries), str(moved), f"{len(replans)}" + (f" ({', '.join(sorted(set(replans)))})" if replans else ""))
    console.print(live)
    if result.get("executors"):
        _executed_summary(result)
    if result.get("approved"):
        console.print(f"approved by the demo (as `chimera approve PLAN --version N`): "
                      f"{', '.join(p[:13] for p in result['approved'])}")
    if result.get("failed"):
        pid, tid = result["failed"]
        attempts = sorted(a["attempt"] for a in run.assignments if (a["plan_id"], a["task"]["task_id"]) == (pid, tid))
        console.print(f"task {tid} of {pid[:13]} failed once and was retried: attempts {attempts}, "
                      f"plan {run.status.get(pid, 'ACTIVE')}")
    silent = result["silent"]
    moved = sorted({(a["plan_id"][:13], a["task"]["task_id"]) for a in run.assignments if a["assigned_to"] == silent})
    lost = [a for a in run.alerts if a["risk"]["category"] == "RESOURCE" and silent in a["risk"]["title"]]
    console.print(f"resource {silent} went silent after its first assignment: {len(moved)} task(s) it held were "
                  f"reallocated; {len(lost)} RESOURCE alert(s)" + (f": {lost[0]['risk']['title']}" if lost else ""))

    atable = Table(title="Risk alerts")
    for col in ("plan", "category", "severity", "score", "risk"):
        atable.add_column(col)
    for a in run.alerts:
        if a["plan_id"] in result["plans"]:
            r = a["risk"]
            atable.add_row(a["plan_id"][:13], r["category"], r["severity"], f"{r['score']:.2f}", r["title"][:60])
    console.print(atable)
    for topic in (T.GOALS_CREATED.dlq, T.EXECUTION_FEEDBACK.dlq):
        for d in result[topic]:
            console.print(f"dead letter on {topic} (key {d.key}): [yellow]{d.headers.get('chimera.dlq.reason', '?')}[/] "
                          f"{d.headers.get('chimera.dlq.detail', '')[:100]}")


@app.command()
def demo(goals: int = typer.Option(6, help="how many sample goals"), timeout: float = 180.0) -> None:
    """The main job: start a broker, a worker and the sinks; announce resources, plan sample goals and
    play executors until every plan ended (live progress bars); print plans, progress, alerts; stop all."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TimeElapsedColumn(), console=console) as progress:
        starting = progress.add_task("starting Kafka broker and planner worker", total=None)
        try:
            stores = Path(tempfile.mkdtemp(prefix="chimera-demo-"))
            (stores / "chroma").mkdir()  # the worker asks the Chroma sink (serving from there) for memory
            with ExitStack() as serving:
                progress.update(starting, description="starting tritonserver (learned estimates)")
                triton = _start_triton(serving)
                # a generous timeout: the demo runs a broker, three sinks, executors and Triton on two cores
                triton_env = {"TRITON_ENABLED": "true", "TRITON_URL": triton["url"], "TRITON_TIMEOUT_S": "5"} \
                    if triton else {}
                with services.stack(worker_env={"MEMORY_DIR": str(stores / "chroma"), **DEMO_WORKER_ENV,
                                                **triton_env}) as (bootstrap, w), ExitStack() as stack:
                    progress.update(starting, description="starting the sinks (ClickHouse, Neo4j, Chroma)")
                    stack.callback(shutil.rmtree, stores, ignore_errors=True)  # runs after the sinks stopped
                    _keep_history(stores)
                    svc = _start_sinks(stack, ["clickhouse", "neo4j", "chroma"], bootstrap, stores)
                    _auto_train(stack, DEMO_HISTORY, DEMO_HISTORY.parent / "train.log")
                    progress.update(starting, description=f"broker {bootstrap}, worker pid {w.proc.pid}, sinks", total=1,
                                    completed=1)
                    sample = samples.sample_goals(goals, _now_ms(), prefix="demo")
                    executors = () if os.environ.get("DEMO_SIMULATED_ONLY") else tuple(
                        _start_executors(stack, bootstrap, stores, _demo_capabilities(sample)))
                    result = asyncio.run(_live_demo(bootstrap, sample, progress, timeout, executors=executors))
                    if len(result["plans"]) < len(sample):
                        err.print(f"[red]only {len(result['plans'])}/{len(sample)} plans arrived[/]\n{w.log_tail()}")
                        raise typer.Exit(1)
                    story = asyncio.run(_memory_story(bootstrap, svc, result))
                    progress.update(starting, description="the REST API: a goal posted over HTTP")
                    result["api"] = _api_story(bootstrap, stores)
                    result["stores"] = _stores(svc, sample, story)
                    result["triton"] = triton and _triton_summary(triton, result)
        except BrokerUnreachable as exc:
            _fail(str(exc))
    _summary(result)
    for line in result.get("api", []):
        console.print(line)
    for line in result.get("stores", []):
        console.print(line)
    for line in result.get("triton") or ["Triton: not installed (make install adds it); plans used the template heuristics"]:
        console.print(line)
    console.print(f"The demo's history stays in {DEMO_HISTORY}: `chimera train estimator --clickhouse "
                  f"{DEMO_HISTORY}` trains on it and prints the evaluation before/after")


DEMO_HISTORY = Path(".data") / "demo" / "clickhouse"   # the last demo's ClickHouse history, kept for `train`


def _keep_history(stores: Path) -> None:
    """The demo's ClickHouse folder is DEMO_HISTORY (emptied first: it holds the last demo's
    history), linked from the demo's temporary folder, which is removed at the end."""
    shutil.rmtree(DEMO_HISTORY, ignore_errors=True)
    DEMO_HISTORY.mkdir(parents=True)
    (stores / "clickhouse").symlink_to(DEMO_HISTORY.resolve(), target_is_directory=True)


def _api_story(bootstrap: str, stores: Path, wait_s: float = 60.0) -> list[str]:
    """The REST API as an integrating service uses it: a key (stored hashed), a goal posted over
    HTTP (it goes through Kafka like any other), its plan read back from the API's own view,
    and the planner's health. Failures are reported, not raised: the demo goes on."""
    import socket

    import httpx

    from api.keys import KeyStore
    keys = KeyStore.load(stores / "api" / "keys.json")
    key, _ = keys.add("demo", "admin", "demo@chimera")
    keys.save()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base, auth = f"http://127.0.0.1:{port}", {"X-API-Key": key}
    goal = {"title": "Publish the quarterly report", "domain": "analytics",
            "objectives": ["Collect the data", "Review the figures"]}
    env = {"API_KEYS_FILE": str(stores / "api" / "keys.json"), "API_PORT": str(port), "API_HOST": "127.0.0.1"}
    try:
        with services.api_process(bootstrap, stores / "api.log", env=env), httpx.Client(timeout=10) as http:
            deadline = time.monotonic() + wait_s
            why = "it did not answer"
            while True:
                try:
                    ready = http.get(f"{base}/health/api")
                    if ready.status_code == 200:
                        break
                    why = "; ".join(ready.json().get("reasons") or []) or ready.text[:200]
                except (httpx.TransportError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    kept = Path(".data") / "demo-api.log"   # the demo's folder is removed at the end
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(stores / "api.log", kept)
                    return [f"API: not ready within {wait_s:g} s: {why} (its log: {kept})"]
                time.sleep(0.3)
            unauthorised = http.get(f"{base}/api/v1/plans").status_code
            posted = http.post(f"{base}/api/v1/plans", json=goal, headers=auth)
            if posted.status_code != 202:
                return [f"API: POST /api/v1/plans answered {posted.status_code}: {posted.text[:200]}"]
            pid = posted.json()["plan_id"]
            while time.monotonic() < deadline:
                got = http.get(f"{base}/api/v1/plans/{pid}", headers=auth)
                if got.status_code == 200 and got.json().get("plan"):
                    break
                time.sleep(0.3)
            else:
                return [f"API: goal accepted (202, plan {pid}) but its plan did not reach the API's view in time"]
            plan = got.json()
            health = http.get(f"{base}/health/planner").json()
            return [f"API (REST, key for tenant demo): without a key {unauthorised}; POST /api/v1/plans -> 202, "
                    f"plan {pid}; GET it -> v{plan['version']}, {len(plan['plan']['tasks'])} tasks, "
                    f"approval {plan['approval']}, status {plan['status']}; /health/planner: {health.get('status')}"]
    except Exception as exc:  # the demo shows what works; say what did not
        return [f"API: {type(exc).__name__}: {exc}"]


def _start_triton(stack: ExitStack) -> dict | None:
    """tritonserver on .data/triton_repo for the demo (None when not installed). A repository
    with only the untrained version 1 first gets a version trained on a small synthetic history
    (once: later demos reuse it), so the plans can show learned estimates."""
    try:
        from infra.tritonserver import TritonServer, pytriton_dir
        pytriton_dir()
    except Exception:
        return None
    from streams import settings as S
    from triton_models import history, repository, training
    repo = repository.prepare(Path(S.load().triton.repository))
    out: dict = {"trained": None}
    if repository.versions(repo, "estimator") == [1]:
        console.print("training the estimator once on a synthetic history (120 goals) for the demo:")
        out["trained"] = training.train_estimator(history.synthetic(120, seed=1), repo, epochs=6, log=console.print)
    server = stack.enter_context(TritonServer(repo, models=("embedder", "estimator"), log_dir=repo / ".log"))
    out["url"] = server.url
    _warm_estimator(server.url, [e.task for e in history.synthetic(8, seed=2)])
    return out


def _warm_estimator(url: str, tasks) -> None:
    """One request with the sample templates' tasks: the server encodes their texts once, so the
    planner's first goals are not answered late (a late answer is a fallback)."""
    import tritonclient.grpc as grpcclient

    from inference.estimator import estimator_inputs
    c = grpcclient.InferenceServerClient(url)
    try:
        c.infer("estimator", estimator_inputs(tasks), client_timeout=300)
    finally:
        c.close()


def _triton_summary(triton: dict, result: dict) -> list[str]:
    import tritonclient.grpc as grpcclient
    c = grpcclient.InferenceServerClient(triton["url"])
    try:
        serving = [f"{m.name} v{m.version}" for m in c.get_model_repository_index().models if m.state == "READY"]
    finally:
        c.close()
    sources: dict[str, int] = {}
    for plan in result["plans"].values():
        sources[plan.get("estimates_source", "heuristic")] = sources.get(plan.get("estimates_source", "heuristic"), 0) + 1
    return [f"Triton at {triton['url']}: serving {', '.join(sorted(serving))}; first plans by estimates: "
            + ", ".join(f"{k} {v}" for k, v in sorted(sources.items()))]


async def _memory_story(bootstrap: str, svc, result: dict) -> dict:
    """The decomposed plan the executors ran to the end is sent again under a new goal id: the
    planner finds it in episodic memory and plans from it (plan.memory)."""
    out: dict = {"failed": result.get("failed")}
    done_pid = result.get("done_pid")
    if done_pid is None or result["run"].status.get(done_pid) != "COMPLETED" or "chroma" not in svc.runners:
        return out
    done_goal = result["wanted"][done_pid]
    memory = svc.runners["chroma"].sink.memory
    started = time.monotonic()
    while time.monotonic() - started < 60:   # the Chroma sink saw every report: the episode is COMPLETED
        got = memory.episodes.get(ids=[done_goal["goal_id"]], include=["metadatas"])["metadatas"]
        if got and got[0].get("outcome") == "COMPLETED":
            break
        await asyncio.sleep(0.5)
    again = {**done_goal, "goal_id": done_goal["goal_id"] + "-again", "created_at_ms": _now_ms()}
    await client.produce(bootstrap, T.GOALS_CREATED.name, [(again["goal_id"], again)])
    pid = derive_plan_id(again["goal_id"])
    async for rec in client.read(bootstrap, T.PLANS_CREATED.name, deadline_s=60):
        if rec.value and rec.value["plan_id"] == pid:
            out.update(repeated=again, done_goal=done_goal, reused=rec.value)
            break
    return out


def _stores(svc, sample: list[dict], story: dict | None = None, settle_s: float = 30.0) -> list[str]:
    """Once every sink has caught up (nothing written for 3 s), a line from each store."""
    from sinks import service
    last, quiet_since, started = None, time.monotonic(), time.monotonic()
    while time.monotonic() - started < settle_s:
        now = {n: r.written for n, r in svc.runners.items()}
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since > 3:
            break
        time.sleep(0.5)
    story = story or {}
    lines = [f"{n}: {r.written} records written, {r.dead_letters} dead letters" for n, r in svc.runners.items()]
    lines += service.summary(svc, failed_task=story.get("failed"), goal=story.get("repeated", sample[0]))
    reused = story.get("reused")
    if reused is not None:
        m = reused.get("memory")
        lines.append(f"Planner memory: '{story['repeated']['title']}' sent again as {story['repeated']['goal_id']}: " + (
            f"planned from {m['source_goal_id']} (similarity {m['similarity']:.2f}), {m['tasks_reused']} tasks, "
            f"{m['tasks_observed']} estimates from observed actuals (x{m['duration_factor']:.2f}); makespan "
            f"{reused['makespan_hours']:g} h" if m else "planned without memory (no similar completed goal found)"))
    return lines


def _read_history(folder: Path, read):
    """`read(reader)` on the ClickHouse folder the sink writes (chdb), closed after."""
    from sinks.clickhouse import reader
    r = reader(folder)
    try:
        return read(r)
    finally:
        r.close()


def _watch_until_stopped(watcher, interval_s: float) -> None:
    """A training watch until Ctrl-C or SIGTERM (how `chimera up` stops it)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        watcher.run(interval_s)
    except KeyboardInterrupt:
        console.print("stopping")


@train_app.command("estimator")
def train_estimator(
        synthetic: int = typer.Option(0, help="train on a synthetic history of N goals (known true durations) "
                                              "instead of ClickHouse"),
        clickhouse: Optional[Path] = typer.Option(None, help="the ClickHouse sink's chdb folder "
                                                                   "(default: [stores] dir/clickhouse)"),
        repository: Optional[Path] = typer.Option(None, help="the serving repository ([triton] repository)"),
        url: Optional[str] = typer.Option(None, help="Triton gRPC host:port to load the new version into "
                                                     "(default: [triton] url / TRITON_URL; none: just write it)"),
        epochs: int = typer.Option(6), lora: bool = typer.Option(True, help="LoRA on the text encoder (else head only)"),
        seed: int = typer.Option(0),
        watch: float = typer.Option(0.0, help="keep running: every WATCH seconds, train when [triton] "
                                              "train_min_new_tasks new finished tasks have accumulated; errors "
                                              "are logged and tried again ([triton] auto_train: `chimera up` "
                                              "starts this)")) -> None:
    """History -> LoRA + head -> evaluation against the serving version on held-out goals ->
    only if better: the next version in the repository, loaded by Triton. Prints the evaluation
    (also appended to <repository>/estimator/evaluations.jsonl)."""
    from streams import settings as S
    from triton_models import history, training
    settings = S.load()
    cfg = settings.triton
    repo = repository or Path(cfg.repository)
    clickhouse = clickhouse or settings.stores.clickhouse_dir

    def examples():
        if synthetic:
            return history.synthetic(synthetic, seed=seed)
        return _read_history(clickhouse, history.from_clickhouse)

    if watch > 0:   # no error ends it: each is logged, counted and tried again (triton_models/watch.py)
        from triton_models.watch import Watch
        console.print(f"training {training.MODEL} every {watch:g} s once {cfg.train_min_new_tasks} new tasks "
                      f"have finished (history: {'synthetic' if synthetic else clickhouse}); Ctrl-C stops")
        _watch_until_stopped(Watch(examples, repo, cfg.train_min_new_tasks, url=url if url is not None else cfg.url,
                                   epochs=epochs, lora=lora, seed=seed, log=console.print), watch)
        return
    ex = examples()
    if not ex:
        _fail("no history with actual durations yet (run goals and executors first, or pass --synthetic N)")
    rec = training.train_estimator(ex, repo, url=url if url is not None else cfg.url, epochs=epochs, lora=lora,
                                   seed=seed, log=console.print)
    if rec.get("load_error"):
        err.print(f"v{rec['new_version']} is written but Triton did not load it: {rec['load_error']}")
        raise typer.Exit(4)
    raise typer.Exit(0 if rec["accepted"] else 3)


@train_app.command("decomposer")
def train_decomposer(
        synthetic: int = typer.Option(0, help="train on N synthetic pairs only, instead of the ClickHouse history"),
        clickhouse: Optional[Path] = typer.Option(None, help="the ClickHouse sink's chdb folder "
                                                                   "(default: [stores] dir/clickhouse)"),
        pairs: Optional[int] = typer.Option(None, help="top the history's pairs up with synthetic ones to this many "
                                                       "while it is short (default [triton] decomposer_pairs)"),
        repository: Optional[Path] = typer.Option(None, help="the serving repository ([triton] repository)"),
        url: Optional[str] = typer.Option(None, help="Triton gRPC host:port to load the new version into"),
        steps: int = typer.Option(40), held_out: int = typer.Option(16), seed: int = typer.Option(0),
        watch: float = typer.Option(0.0, help="keep running: every WATCH seconds, train when [triton] "
                                              "decomposer_min_new_plans new good plans have accumulated")) -> None:
    """Goals whose plans completed within budget and schedule (ClickHouse; synthetic pairs top
    them up while history is short) -> LoRA on SmolLM2-135M -> share of held-out answers the
    planner's validator accepts, against the serving version -> only if higher: the next
    version, loaded by Triton."""
    from streams import settings as S
    from triton_models import decomposer_history as H
    from triton_models import decomposer_training as D
    settings = S.load()
    cfg = settings.triton
    repo, url = repository or Path(cfg.repository), url if url is not None else cfg.url
    clickhouse = clickhouse or settings.stores.clickhouse_dir
    want = pairs if pairs is not None else cfg.decomposer_pairs

    def history() -> list:
        if synthetic:
            return []
        return _read_history(clickhouse, lambda r: H.from_clickhouse(r, log=console.print))

    if watch > 0:   # no error ends it: each is logged, counted and tried again (triton_models/watch.py)
        from triton_models.watch import decomposer_watch
        console.print(f"training {D.MODEL} every {watch:g} s once {cfg.decomposer_min_new_plans} new good plans "
                      f"have accumulated (history: {clickhouse}); Ctrl-C stops")
        _watch_until_stopped(decomposer_watch(history, repo, cfg.decomposer_min_new_plans, want=want, url=url,
                                              steps=steps, held_out=held_out, seed=seed, log=console.print), watch)
        return
    found = history()
    mixed, extra = (D.synthetic_pairs(synthetic, seed=seed), synthetic) if synthetic else H.mixed(found, want, seed)
    rec = D.train_decomposer(mixed, repo, url=url, steps=steps, held_out=held_out, seed=seed, synthetic=extra,
                             log=console.print)
    console.print(f"valid answers on {rec['held_out']} held-out goals: serving v{rec['serving_version']} "
                  f"{rec['serving_valid']:.0%}, candidate {rec['candidate_valid']:.0%} -> "
                  + (f"wrote v{rec['new_version']}" if rec["accepted"] else "not better: nothing written"))
    if rec.get("load_error"):
        err.print(f"v{rec['new_version']} is written but Triton did not load it: {rec['load_error']}")
        raise typer.Exit(4)
    raise typer.Exit(0 if rec["accepted"] else 3)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
