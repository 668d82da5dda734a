"""`chimera`: run the stack, the demo, produce goals, tail topics, approve plans."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from processors.ids import plan_id as derive_plan_id
from streams import client, samples, services
from topics import registry as T
from topics.admin import BrokerUnreachable, create_topics, list_topics
from topics.serde import SerdeError

app = typer.Typer(help="Chimera: goals in, executable plans out, on Kafka.", no_args_is_help=True)
topics_app = typer.Typer(help="Create or list the Chimera topics.", no_args_is_help=True)
produce_app = typer.Typer(help="Produce records to Chimera topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(produce_app, name="produce")
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


@app.command()
def approve(plan: str, version: int = typer.Option(..., help="the version being approved"),
            by: str = typer.Option(os.environ.get("USER", "cli")), reject: bool = False,
            reason: str = "") -> None:
    """Approve (or --reject) a plan version that waits for approval."""
    record = {"plan_id": plan, "version": version, "decision": "REJECT" if reject else "APPROVE", "by": by,
              "reason": reason, "decided_at_ms": _now_ms()}
    _run(client.produce(_bootstrap(), T.PLANS_APPROVALS.name, [(plan, record)]))
    console.print(f"{record['decision'].lower()} sent for {plan} v{version}")


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
       sinks: bool = typer.Option(True, help="also run the ClickHouse, Neo4j and Chroma sinks (data in .data/)")) -> None:
    """Start a local broker (unless KAFKA_BOOTSTRAP is set), the topics, a worker and the sinks; Ctrl-C stops all."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops everything like Ctrl-C
    with services.stack(data_dir=str(data_dir) if data_dir else None) as (bootstrap, w), ExitStack() as stack:
        if sinks:
            _start_sinks(stack, ["clickhouse", "neo4j", "chroma"], bootstrap, Path(".data"))
        console.print(f"[green]up[/]: KAFKA_BOOTSTRAP={bootstrap}  worker log: {w.log_path}")
        console.print(f"in another shell: export KAFKA_BOOTSTRAP={bootstrap}; chimera tail plans.created")
        console.print("the worker is supervised: if it dies or stalls it is restarted")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping")


def _start_sinks(stack, names: list[str], bootstrap: str, data_dir: Path):
    """The sinks (each its own consumer group) inside `stack`; a local Neo4j unless NEO4J_URI."""
    from sinks import service
    uri = os.environ.get("NEO4J_URI")
    if "neo4j" in names and not uri:
        from infra.neo4j import Neo4jServer
        uri = stack.enter_context(Neo4jServer(data_dir=data_dir / "neo4j")).uri
        console.print(f"Neo4j: NEO4J_URI={uri}")
    return stack.enter_context(service.running(names, bootstrap, data_dir=data_dir, neo4j_uri=uri))


@app.command()
def sink(names: list[str] = typer.Argument(..., help="clickhouse, neo4j, chroma or all"),
         data_dir: Path = typer.Option(Path(".data"), help="chdb, Chroma and (local) Neo4j data folders"),
         seconds: Optional[float] = typer.Option(None, help="stop after this many seconds (default: Ctrl-C)")) -> None:
    """Run sinks (each its own consumer group) until Ctrl-C. Neo4j: NEO4J_URI, else a local Neo4j is started."""
    import logging

    from sinks import service
    try:
        chosen = service.expand(names)
    except ValueError as exc:
        _fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if os.environ.get("CHIMERA_METRICS_PORT"):
        from prometheus_client import start_http_server
        start_http_server(int(os.environ["CHIMERA_METRICS_PORT"]), addr="127.0.0.1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
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


async def _collect(bootstrap: str, goals: list[dict], timeout_s: float, progress: Progress) -> dict:
    """Wait for every goal's plan, then gather updates and alerts that follow it."""
    wanted = {derive_plan_id(g["goal_id"]): g for g in goals}
    seen: dict[str, dict] = {}
    task = progress.add_task("planning", total=len(wanted))
    async for rec in client.read(bootstrap, T.PLANS_CREATED.name, deadline_s=timeout_s):
        if rec.value and rec.value["plan_id"] in wanted and rec.value["plan_id"] not in seen:
            seen[rec.value["plan_id"]] = rec.value
            progress.update(task, completed=len(seen))
        if len(seen) == len(wanted):
            break
    others = {}
    forged = next(iter(seen))  # a COMPLETED for a task of a real plan that was never handed out
    await client.produce(bootstrap, T.EXECUTION_FEEDBACK.name, [(forged, {
        "event_id": "demo-forged", "plan_id": forged, "task_id": seen[forged]["tasks"][-1]["task_id"],
        "status": "COMPLETED", "reported_at_ms": _now_ms()})])
    for topic in (T.PLANS_UPDATED.name, T.RISKS_ALERTS.name, T.TASKS_ASSIGNED.name, T.GOALS_CREATED.dlq):
        others[topic] = [r async for r in client.read(bootstrap, topic, idle_timeout_s=3.0, deadline_s=20)]
    letters: list = []  # the forged feedback's dead letter: wait for it, not for a quiet topic
    async for r in client.read(bootstrap, T.EXECUTION_FEEDBACK.dlq, deadline_s=20, done=lambda: bool(letters)):
        if r.key == forged:
            letters.append(r)
    others[T.EXECUTION_FEEDBACK.dlq] = letters
    return {"plans": seen, "wanted": wanted, **others}


def _summary(result: dict) -> None:
    table = Table(title="Plans")
    for col in ("goal", "plan", "strategy", "tasks", "makespan h", "refined h", "cost", "approval", "risks", "alerts",
                "assigned"):
        table.add_column(col)
    updates, alerts, assigned = (result[T.PLANS_UPDATED.name], result[T.RISKS_ALERTS.name],
                                 result[T.TASKS_ASSIGNED.name])
    for pid, plan in result["plans"].items():
        ups = [u.value["plan"] for u in updates if u.value and u.value["plan"]["plan_id"] == pid]
        refined = min((u["makespan_hours"] for u in ups), default=None)
        table.add_row(result["wanted"][pid]["title"][:40], pid[:13], plan["strategy"], str(len(plan["tasks"])),
                      f"{plan['makespan_hours']:g}", f"{refined:g}" if refined is not None else "-",
                      f"{plan['cost']['total']:,.0f}", ups[-1]["approval"] if ups else plan["approval"],
                      str(len(plan["risks"])), str(sum(1 for a in alerts if a.value and a.value["plan_id"] == pid)),
                      str(sum(1 for a in assigned if a.value and a.value["plan_id"] == pid)))
    console.print(table)
    atable = Table(title="Risk alerts")
    for col in ("plan", "category", "severity", "score", "risk"):
        atable.add_column(col)
    for a in alerts:
        if a.value and a.value["plan_id"] in result["plans"]:
            r = a.value["risk"]
            atable.add_row(a.value["plan_id"][:13], r["category"], r["severity"], f"{r['score']:.2f}", r["title"][:60])
    console.print(atable)
    for topic in (T.GOALS_CREATED.dlq, T.EXECUTION_FEEDBACK.dlq):
        for d in result[topic]:
            console.print(f"dead letter on {topic} (key {d.key}): [yellow]{d.headers.get('chimera.dlq.reason', '?')}[/] "
                          f"{d.headers.get('chimera.dlq.detail', '')[:100]}")


@app.command()
def demo(goals: int = typer.Option(6, help="how many sample goals"), timeout: float = 180.0) -> None:
    """The main job: start a broker and a worker, plan sample goals, print plans and alerts, stop all."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        starting = progress.add_task("starting Kafka broker and planner worker", total=None)
        try:
            stores = Path(tempfile.mkdtemp(prefix="chimera-demo-"))
            (stores / "chroma").mkdir()  # the worker asks the Chroma sink (serving from there) for memory
            with services.stack(worker_env={"MEMORY_DIR": str(stores / "chroma")}) as (bootstrap, w), \
                    ExitStack() as stack:
                progress.update(starting, description="starting the sinks (ClickHouse, Neo4j, Chroma)")
                stack.callback(shutil.rmtree, stores, ignore_errors=True)  # runs after the sinks stopped
                svc = _start_sinks(stack, ["clickhouse", "neo4j", "chroma"], bootstrap, stores)
                progress.update(starting, description=f"broker {bootstrap}, worker pid {w.proc.pid}, sinks", total=1,
                                completed=1)
                sample = samples.sample_goals(goals, _now_ms(), prefix="demo")
                asyncio.run(client.produce(bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in sample]))
                asyncio.run(client.produce(bootstrap, T.GOALS_CREATED.name, [("bad-goal", b"{not avro}")]))
                huge = {"goal_id": "demo-huge", "title": "1,000 tasks", "created_at_ms": _now_ms(),
                        "tasks": [{"task_id": f"t{i}", "name": f"t{i}", "duration_hours": 1} for i in range(1000)]}
                asyncio.run(client.produce(bootstrap, T.GOALS_CREATED.name, [(huge["goal_id"], huge)]))

                result = asyncio.run(_collect(bootstrap, sample, timeout, progress))
                if len(result["plans"]) < len(sample):
                    err.print(f"[red]only {len(result['plans'])}/{len(sample)} plans arrived[/]\n{w.log_tail()}")
                    raise typer.Exit(1)
                story = asyncio.run(_memory_story(bootstrap, svc, sample, result["plans"], progress))
                result["stores"] = _stores(svc, sample, story)
        except BrokerUnreachable as exc:
            _fail(str(exc))
    _summary(result)
    for line in result.get("stores", []):
        console.print(line)


async def _memory_story(bootstrap: str, svc, sample: list[dict], plans: dict, progress: Progress,
                        factor: float = 1.3, timeout_s: float = 90.0) -> dict:
    """Run one approved plan to the end (every handed-out task COMPLETED, taking `factor` x its
    planned hours), fail a task of another, then send the finished goal again under a new id:
    the planner finds it in episodic memory and plans from it (plan.memory)."""
    goals = {derive_plan_id(g["goal_id"]): g for g in sample}
    approved = [pid for pid, p in plans.items() if p["approval"] in ("APPROVED", "AUTO_APPROVED")]
    approved = approved[1:] + approved[:1]   # the first plan got the demo's forged feedback
    # run to the end a decomposed goal (one with its own tasks never plans from memory)
    decomposed = [pid for pid in approved if not goals[pid].get("tasks")]
    if len(approved) < 2 or not decomposed:
        return {}
    done_pid = decomposed[0]
    fail_pid = next(pid for pid in approved if pid != done_pid)
    want = {t["task_id"] for t in plans[done_pid]["tasks"]}
    completed: set[str] = set()
    failed: list[str] = []
    task = progress.add_task("executing a plan", total=len(want))
    async for rec in client.read(bootstrap, T.TASKS_ASSIGNED.name, deadline_s=timeout_s,
                                 done=lambda: completed == want and bool(failed)):
        v = rec.value
        if not v or v["plan_id"] not in (done_pid, fail_pid):
            continue
        t = v["task"]
        if v["plan_id"] == fail_pid and not failed:
            failed.append(t["task_id"])
            status, hours, msg = "FAILED", None, "demo: the executor ran out of memory"
        elif v["plan_id"] == done_pid and t["task_id"] not in completed:
            completed.add(t["task_id"])
            status, hours, msg = "COMPLETED", round(t["estimate"]["most_likely"] * factor, 2), ""
        else:
            continue
        await client.produce(bootstrap, T.EXECUTION_FEEDBACK.name, [(v["plan_id"], {
            "event_id": f"demo-{v['plan_id']}-{t['task_id']}", "plan_id": v["plan_id"], "task_id": t["task_id"],
            "status": status, "progress_pct": 100.0, "actual_hours": hours, "message": msg,
            "reported_at_ms": _now_ms(), "attempt": v.get("attempt")})])
        progress.update(task, completed=len(completed))
    out: dict = {"failed": (fail_pid, failed[0]) if failed else None}
    if completed != want or "chroma" not in svc.runners:
        return out
    done_goal = goals[done_pid]
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
