"""Runtime settings: chimera.toml + environment (the only place that reads them)."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from processors.config import PlanningConfig, with_env
from processors.limits import Limits

REPO = Path(__file__).resolve().parent.parent


def _section(cls, d: Mapping[str, Any], env: Mapping[str, str], prefix: str, name: str):
    """A settings section's field types and its values: the file's, unknown keys refused,
    then <PREFIX><KEY> environment variables over them (as strings, converted by the caller)."""
    kinds = {f: type(getattr(cls, f)) for f in cls.__dataclass_fields__}
    values = dict(d)
    for key in values:
        if key not in kinds:
            raise ValueError(f"unknown {name} setting: {key!r}")
    for key in kinds:
        if f"{prefix}{key.upper()}" in env:
            values[key] = env[f"{prefix}{key.upper()}"]
    return kinds, values


@dataclass(frozen=True)
class WorkerSettings:
    """`[worker]`: how a Faust worker runs (CHIMERA_<KEY> env vars override)."""

    store: str = "rocksdb://"              # tables on disk; "memory://" keeps them in RAM
    producer_timeout_s: float = 10.0       # no send may hold an agent longer than this
    dead_letter_timeout_s: float = 5.0     # a dead letter that cannot be sent is logged and counted
    watchdog_interval_s: float = 5.0
    watchdog_stall_s: float = 60.0         # lag without progress this long: unhealthy, exit
    state_ttl_hours: float = 24.0 * 7      # finished plans' state is dropped after this
    processing_guarantee: str = "at_least_once"  # or exactly_once (Kafka transactions)
    producer_linger_ms: float = 1.0        # outputs wait this long to share a produce request

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], env: Mapping[str, str]) -> "WorkerSettings":
        kinds, values = _section(cls, d, env, "CHIMERA_", "worker")
        try:
            return cls(**{k: kinds[k](v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"[worker]: {exc}") from None


@dataclass(frozen=True)
class MemorySettings:
    """`[memory]`: the planner's episodic-memory look-up (MEMORY_<KEY> env vars override).

    The planner asks the process that owns the Chroma folder (the Chroma sink, which writes
    its address to `<dir>/memory.json`) or `url`. Safe when off or absent: no folder, no
    endpoint, a slow or failing look-up: the goal is planned without memory."""

    enabled: bool = True
    dir: str = str(REPO / ".data" / "chroma")  # the Chroma sink's folder (its memory.json)
    url: str = ""                              # the recall endpoint; "" = read it from dir/memory.json
    threshold: float = 0.8                     # least cosine similarity to reuse an episode
    timeout_s: float = 0.25                    # a look-up slower than this: plan without memory
    min_factor: float = 0.25                   # duration corrections stay within [min, max] x planned
    max_factor: float = 4.0

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], env: Mapping[str, str]) -> "MemorySettings":
        kinds, values = _section(cls, d, env, "MEMORY_", "memory")
        out = cls(**_typed("memory", kinds, values))
        if not Path(out.dir).is_absolute():   # from the repository, as [stores] dir
            out = cls(**{**out.__dict__, "dir": str(REPO / out.dir)})
        return out


def _typed(name: str, kinds: dict, values: dict) -> dict:
    """Convert a section's values to its field types (booleans from the usual words)."""
    out = {}
    for k, v in values.items():
        if kinds[k] is bool and isinstance(v, str):
            if v.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"[{name}]: {k} must be a boolean, got {v!r}")
            out[k] = v.strip().lower() in ("1", "true", "yes", "on")
        else:
            try:
                out[k] = kinds[k](v)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"[{name}]: {k}: {exc}") from None
    return out


@dataclass(frozen=True)
class TritonSettings:
    """`[triton]`: the planner's learned estimator on Triton (TRITON_<KEY> env vars override;
    TRITON_URL is the server's gRPC host:port). Off by default: a planner without a server
    plans with the template heuristics, as before. When on, each new goal's tasks go to the
    estimator in one request bounded by `timeout_s`; a failed or late answer plans with the
    heuristics at once (the plan says estimates_source = heuristic:fallback) and the server is
    not asked again for `retry_after_s`, so a dead server costs nothing per goal."""

    enabled: bool = False
    url: str = ""                        # host:grpc_port; "" = nothing to ask (fallback)
    model: str = "estimator"
    timeout_s: float = 0.5
    retry_after_s: float = 5.0
    cache_ttl_s: float = 30.0            # answers are reused this long (0: ask for every goal)
    train_min_new_tasks: int = 500       # `chimera train estimator --watch`: train once this many new tasks finished
    auto_train: bool = False             # `chimera up` (and the demo) also run that watch in their own process
    train_interval_s: float = 600.0      # how often the watch looks at the history
    repository: str = str(REPO / ".data" / "triton_repo")   # where `chimera train` writes versions
    # `chimera train decomposer`: the history's pairs (plans completed within budget and schedule)
    # topped up with synthetic ones to this many while it is short; its watch trains again once
    # this many new such plans have accumulated
    decomposer_pairs: int = 160
    decomposer_min_new_plans: int = 50
    # the LLM decomposer (inference/decomposer.py), independent of `enabled` (the estimator):
    # each new goal without explicit tasks is also sent to it off the fast path, and its
    # breakdown replaces the template plan only if it judges better (processors/llm_plan.py)
    decompose: bool = False
    decompose_model: str = "decomposer"
    decompose_timeout_s: float = 60.0    # one batched request (answers take seconds on a CPU)
    decompose_batch_ms: float = 20.0     # goals asked within this window go out as one request
    decompose_max_batch: int = 8         # the model's max_batch_size

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], env: Mapping[str, str]) -> "TritonSettings":
        kinds, values = _section(cls, d, env, "TRITON_", "triton")
        return cls(**_typed("triton", kinds, values))


@dataclass(frozen=True)
class ApiSettings:
    """`[api]`: the REST API (API_<KEY> env vars override). Keys live hashed in `keys_file`
    (`chimera api keys add`), never in this file."""

    host: str = "127.0.0.1"
    port: int = 8080
    keys_file: str = str(REPO / ".data" / "api" / "keys.json")
    rate_per_minute: float = 120.0         # per key, sustained
    burst: int = 30                        # per key, at once
    page_size: int = 50                    # default list page
    max_page_size: int = 500
    lag_threshold: int = 1000              # consumer lag over this: unhealthy
    health_components: str = "planner,decomposer,coordinator,executor,sinks,triton"  # those that turn /health red
    write_timeout_s: float = 10.0          # a produce the broker does not confirm in time: 503

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], env: Mapping[str, str]) -> "ApiSettings":
        kinds, values = _section(cls, d, env, "API_", "api")
        out = cls(**_typed("api", kinds, values))
        if not Path(out.keys_file).is_absolute():
            out = cls(**{**out.__dict__, "keys_file": str(REPO / out.keys_file)})
        return out


@dataclass(frozen=True)
class StoreSettings:
    """`[stores]`: where the sinks keep what they store. Locally, chdb's and Chroma's folders under
    `dir` (`clickhouse_dir`, `chroma_dir`) and a Neo4j the project starts; a URL points the same
    code at a server instead. Environment: CHIMERA_STORES_DIR, and the names the stores' own
    tools use (ENV). Relative folders are taken from the repository, as `.data` is everywhere."""

    dir: str = str(REPO / ".data")
    clickhouse_url: str = ""       # http://user:pass@host:8123/ : a ClickHouse server, not chdb
    chroma_url: str = ""           # http://host:8000 : a Chroma server, not a folder
    neo4j_uri: str = ""            # bolt://host:7687 : a Neo4j the project does not start
    neo4j_user: str = ""
    neo4j_password: str = ""

    ENV = {"dir": "CHIMERA_STORES_DIR", "clickhouse_url": "CLICKHOUSE_URL", "chroma_url": "CHROMA_URL",
           "neo4j_uri": "NEO4J_URI", "neo4j_user": "NEO4J_USER", "neo4j_password": "NEO4J_PASSWORD"}

    @property
    def clickhouse_dir(self) -> Path:
        return Path(self.dir) / "clickhouse"

    @property
    def chroma_dir(self) -> Path:
        return Path(self.dir) / "chroma"

    @property
    def neo4j_auth(self) -> tuple[str, str] | None:
        return (self.neo4j_user, self.neo4j_password) if self.neo4j_user else None

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], env: Mapping[str, str]) -> "StoreSettings":
        values = dict(d)
        for key in values:
            if key not in cls.ENV:
                raise ValueError(f"unknown stores setting: {key!r}")
        values.update({key: env[var] for key, var in cls.ENV.items() if env.get(var)})
        out = cls(**{k: str(v) for k, v in values.items()})
        if not Path(out.dir).is_absolute():
            out = cls(**{**out.__dict__, "dir": str(REPO / out.dir)})
        return out


@dataclass(frozen=True)
class Settings:
    bootstrap: str
    planning: PlanningConfig
    limits: Limits = field(default_factory=Limits)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    triton: TritonSettings = field(default_factory=TritonSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    stores: StoreSettings = field(default_factory=StoreSettings)
    app_id: str = "chimera-planner"
    data_dir: str = str(REPO / ".data" / "faust")   # the worker's Faust tables (CHIMERA_DATA_DIR)


def _tables(path: str | os.PathLike | None, env: Mapping[str, str]) -> dict:
    path = Path(path or env.get("CHIMERA_CONFIG") or REPO / "chimera.toml")
    if path.exists():
        with path.open("rb") as fh:
            try:
                return tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: {exc}") from exc
    if "CHIMERA_CONFIG" in env:
        raise FileNotFoundError(f"CHIMERA_CONFIG={path} does not exist")
    return {}


def load_planning(path: str | os.PathLike | None = None, env=os.environ) -> PlanningConfig:
    """[planning] of CHIMERA_CONFIG (default: chimera.toml in the repo), then PLANNING_* env vars."""
    return with_env(PlanningConfig.from_mapping(_tables(path, env).get("planning", {})), env)


def load_stores(env=os.environ, path: str | os.PathLike | None = None) -> StoreSettings:
    """[stores] of CHIMERA_CONFIG, then its environment variables (read where a store is opened,
    so a process sees the environment it runs with)."""
    return StoreSettings.from_mapping(_tables(path, env).get("stores", {}), env)


def load(env=os.environ, path: str | os.PathLike | None = None) -> Settings:
    tables = _tables(path, env)
    stores = StoreSettings.from_mapping(tables.get("stores", {}), env)
    memory = dict(tables.get("memory", {}))
    if "dir" not in memory:   # the planner's memory is the Chroma sink's folder unless told otherwise
        memory["dir"] = str(stores.chroma_dir)
    return Settings(bootstrap=env.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                    planning=with_env(PlanningConfig.from_mapping(tables.get("planning", {})), env),
                    limits=Limits.from_mapping(tables.get("limits", {}), env),
                    worker=WorkerSettings.from_mapping(tables.get("worker", {}), env),
                    memory=MemorySettings.from_mapping(memory, env),
                    triton=TritonSettings.from_mapping(tables.get("triton", {}), env),
                    api=ApiSettings.from_mapping(tables.get("api", {}), env),
                    stores=stores,
                    app_id=env.get("CHIMERA_APP_ID", "chimera-planner"),
                    data_dir=env.get("CHIMERA_DATA_DIR") or str(REPO / ".data" / "faust"))
