"""Planning configuration: the `[planning]` table of chimera.toml, plus env overrides.

Pure: `from_mapping` takes the already-parsed TOML table (a dict) and `with_env` takes
an environment mapping. Reading the file (tomllib) and os.environ happens in streams/.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .model import RESOURCE_KINDS, Severity

# Hourly cost per unit of each resource kind, plus "base" per task-hour.
DEFAULT_HOURLY_RATES: dict[str, float] = {
    "base": 50.0,        # per task-hour (people / agent time)
    "cpu": 0.05,         # per core-hour
    "gpu": 2.5,          # per GPU-hour
    "memory_gb": 0.005,  # per GB-hour
    "storage_gb": 0.0002,  # per GB-hour
    "agents": 20.0,      # per agent-hour
}

DEFAULT_CAPACITIES: dict[str, float] = {
    "cpu": 32.0,
    "gpu": 4.0,
    "memory_gb": 128.0,
    "storage_gb": 2000.0,
    "agents": 8.0,
}

SEVERITY_ORDER: tuple[str, ...] = tuple(s.value for s in Severity)  # LOW < ... < CRITICAL


@dataclass(frozen=True)
class PlanningConfig:
    max_concurrent_tasks: int = 10
    default_task_timeout_hours: float = 8.0
    risk_threshold_probability: float = 0.7
    risk_threshold_impact: str = "HIGH"
    resource_buffer_percentage: float = 0.1
    planning_horizon_days: int = 30
    auto_approve_low_risk_plans: bool = True
    enable_continuous_replanning: bool = True
    replanning_interval_minutes: int = 60
    refine_budget_seconds: float = 1.0
    refine_workers: int = 2
    alert_score_threshold: float = 0.5
    time_unit_hours: float = 0.25
    # live plans (issue 7): allocation, retries, circuit breaker, progress, replanning
    resource_heartbeat_timeout_seconds: float = 30.0   # a resource silent this long is lost
    max_task_attempts: int = 3                         # attempts per task, the first included
    retry_base_seconds: float = 5.0                    # delay before the 2nd attempt
    retry_backoff_factor: float = 2.0                  # each further retry waits this much longer
    retry_max_seconds: float = 300.0                   # cap on one retry delay
    breaker_failure_threshold: int = 3                 # consecutive failures that open a breaker
    breaker_cooldown_seconds: float = 60.0             # OPEN -> HALF_OPEN after this
    progress_interval_seconds: float = 5.0             # at most one progress version per plan per interval
    replan_variance_hours: float = 4.0                 # |schedule variance| beyond this replans
    replan_spi_threshold: float = 0.8                  # SPI below this replans
    # learned estimates (issue 10, processors/estimates.py): a task's learned duration replaces
    # the template's only when its 80% interval (high - low) / median is at most this ratio;
    # the untrained estimator (template x [0.7, 1.6]) has 0.9 and so never replaces anything
    learned_interval_ratio: float = 0.8
    learned_failure_threshold: float = 0.3             # learned failure probability that makes a risk
    hourly_rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_HOURLY_RATES))
    default_capacities: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CAPACITIES))

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def impact_threshold_value(self) -> float:
        """The numeric impact (0..1) at which `risk_threshold_impact` starts."""
        return SEVERITY_IMPACT_FLOOR[self.risk_threshold_impact]

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> "PlanningConfig":
        """Build from the `[planning]` table; unknown keys or wrong types raise ValueError."""
        if not isinstance(d, Mapping):
            raise ValueError(f"planning config must be a table, got {type(d).__name__}")
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key not in _FIELDS:
                raise ValueError(f"unknown planning config key: {key!r}")
            kwargs[key] = _coerce(key, value)
        # Partial rate/capacity tables extend the defaults rather than replace them.
        if "hourly_rates" in kwargs:
            kwargs["hourly_rates"] = {**DEFAULT_HOURLY_RATES, **kwargs["hourly_rates"]}
        if "default_capacities" in kwargs:
            kwargs["default_capacities"] = {**DEFAULT_CAPACITIES, **kwargs["default_capacities"]}
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, Any]:
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), dict) else v)
                for f in dataclasses.fields(self)}


# Impact floor for each severity level (impact values are 0..1).
SEVERITY_IMPACT_FLOOR: dict[str, float] = {"LOW": 0.0, "MEDIUM": 0.3, "HIGH": 0.6, "CRITICAL": 0.85}

_FIELDS: dict[str, Any] = {f.name: f.type for f in dataclasses.fields(PlanningConfig)}
_INT = {"max_concurrent_tasks", "planning_horizon_days", "replanning_interval_minutes", "refine_workers",
        "max_task_attempts", "breaker_failure_threshold"}
_FLOAT = {"default_task_timeout_hours", "risk_threshold_probability", "resource_buffer_percentage",
          "refine_budget_seconds", "alert_score_threshold", "time_unit_hours",
          "resource_heartbeat_timeout_seconds", "retry_base_seconds", "retry_backoff_factor",
          "retry_max_seconds", "breaker_cooldown_seconds", "progress_interval_seconds",
          "replan_variance_hours", "replan_spi_threshold", "learned_interval_ratio", "learned_failure_threshold"}
_BOOL = {"auto_approve_low_risk_plans", "enable_continuous_replanning"}
_DICT = {"hourly_rates", "default_capacities"}

# Env aliases from the seeds (PLANNING_RISK_THRESHOLD, PLANNING_REPLANNING_INTERVAL).
ENV_ALIASES: dict[str, str] = {
    "PLANNING_RISK_THRESHOLD": "risk_threshold_probability",
    "PLANNING_REPLANNING_INTERVAL": "replanning_interval_minutes",
}


def _coerce(key: str, value: Any) -> Any:
    if key in _BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a boolean, got {value!r}")
        return value
    if key in _INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return value
    if key in _FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        return float(value)
    if key == "risk_threshold_impact":
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return value.strip().upper()
    if key in _DICT:
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a table, got {value!r}")
        out: dict[str, float] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{key}.{k} must be a number, got {v!r}")
            out[str(k)] = float(v)
        return out
    raise ValueError(f"unknown planning config key: {key!r}")  # pragma: no cover


def _validate(cfg: PlanningConfig) -> None:
    if cfg.risk_threshold_impact not in SEVERITY_IMPACT_FLOOR:
        raise ValueError(f"risk_threshold_impact must be one of {SEVERITY_ORDER}, "
                         f"got {cfg.risk_threshold_impact!r}")
    if cfg.max_concurrent_tasks < 1:
        raise ValueError("max_concurrent_tasks must be >= 1")
    if not 0.0 <= cfg.risk_threshold_probability <= 1.0:
        raise ValueError("risk_threshold_probability must be within 0..1")
    if cfg.learned_interval_ratio < 0:
        raise ValueError("learned_interval_ratio must be >= 0")
    if not 0.0 <= cfg.learned_failure_threshold <= 1.0:
        raise ValueError("learned_failure_threshold must be within 0..1")
    if not 0.0 <= cfg.alert_score_threshold <= 1.0:
        raise ValueError("alert_score_threshold must be within 0..1")
    if cfg.resource_buffer_percentage < 0:
        raise ValueError("resource_buffer_percentage must be >= 0")
    if cfg.time_unit_hours <= 0:
        raise ValueError("time_unit_hours must be > 0")
    if cfg.planning_horizon_days <= 0:
        raise ValueError("planning_horizon_days must be > 0")
    if cfg.default_task_timeout_hours <= 0:
        raise ValueError("default_task_timeout_hours must be > 0")
    if cfg.replanning_interval_minutes <= 0:
        raise ValueError("replanning_interval_minutes must be > 0")
    if cfg.refine_workers < 1:
        raise ValueError("refine_workers must be >= 1")
    if cfg.refine_budget_seconds < 0:
        raise ValueError("refine_budget_seconds must be >= 0")
    for key in ("resource_heartbeat_timeout_seconds", "retry_max_seconds", "breaker_cooldown_seconds",
                "replan_variance_hours"):
        if getattr(cfg, key) <= 0:
            raise ValueError(f"{key} must be > 0")
    for key in ("retry_base_seconds", "progress_interval_seconds"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key} must be >= 0")
    if cfg.max_task_attempts < 1:
        raise ValueError("max_task_attempts must be >= 1")
    if cfg.breaker_failure_threshold < 1:
        raise ValueError("breaker_failure_threshold must be >= 1")
    if cfg.retry_backoff_factor < 1.0:
        raise ValueError("retry_backoff_factor must be >= 1")
    if cfg.retry_base_seconds > cfg.retry_max_seconds:
        raise ValueError("retry_base_seconds must be <= retry_max_seconds")
    if not 0.0 < cfg.replan_spi_threshold <= 1.0:
        raise ValueError("replan_spi_threshold must be within (0, 1]")
    for k in cfg.default_capacities:
        if k not in RESOURCE_KINDS:
            raise ValueError(f"default_capacities: unknown resource kind {k!r}")
    for k in cfg.hourly_rates:
        if k not in RESOURCE_KINDS and k != "base":
            raise ValueError(f"hourly_rates: unknown resource kind {k!r}")


def _parse_env(key: str, raw: str) -> Any:
    raw = raw.strip()
    if key in _BOOL:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: not a boolean: {raw!r}")
    if key in _INT:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{key}: not an integer: {raw!r}") from None
    if key in _FLOAT:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{key}: not a number: {raw!r}") from None
    if key in _DICT:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"{key}: expected a JSON object: {raw!r}") from None
        return _coerce(key, value)
    return _coerce(key, raw)


def with_env(cfg: PlanningConfig, env: Mapping[str, str]) -> PlanningConfig:
    """Apply PLANNING_<KEY_UPPER> overrides (and the seeds' aliases) from `env`.

    Unrelated PLANNING_* variables are ignored (the environment is shared); bad values
    raise ValueError naming the variable. Dict keys take a JSON object.
    """
    changes: dict[str, Any] = {}
    names = [(alias, key) for alias, key in ENV_ALIASES.items()]
    names += [("PLANNING_" + key.upper(), key) for key in _FIELDS]  # the exact name wins over an alias
    for var, key in names:
        if var in env:
            try:
                changes[key] = _parse_env(key, env[var])
            except ValueError as exc:
                raise ValueError(f"environment variable {var}: {exc}") from None
    if not changes:
        return cfg
    return dataclasses.replace(cfg, **changes)
