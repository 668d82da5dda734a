"""Runtime settings: chimera.toml + environment (the only place that reads them)."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from processors.config import PlanningConfig, with_env

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    bootstrap: str
    planning: PlanningConfig
    app_id: str = "chimera-planner"


def load_planning(path: str | os.PathLike | None = None, env=os.environ) -> PlanningConfig:
    """[planning] of CHIMERA_CONFIG (default: chimera.toml in the repo), then PLANNING_* env vars."""
    path = Path(path or env.get("CHIMERA_CONFIG") or REPO / "chimera.toml")
    table = {}
    if path.exists():
        with path.open("rb") as fh:
            try:
                table = tomllib.load(fh).get("planning", {})
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: {exc}") from exc
    elif "CHIMERA_CONFIG" in env:
        raise FileNotFoundError(f"CHIMERA_CONFIG={path} does not exist")
    return with_env(PlanningConfig.from_mapping(table), env)


def load(env=os.environ) -> Settings:
    return Settings(bootstrap=env.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"), planning=load_planning(env=env),
                    app_id=env.get("CHIMERA_APP_ID", "chimera-planner"))
