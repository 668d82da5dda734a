import tomllib
from pathlib import Path

import pytest

from processors import ids
from processors.config import DEFAULT_CAPACITIES, DEFAULT_HOURLY_RATES, PlanningConfig, with_env

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_seed_keys():
    c = PlanningConfig()
    assert c.max_concurrent_tasks == 10
    assert c.default_task_timeout_hours == 8.0
    assert c.risk_threshold_probability == 0.7
    assert c.risk_threshold_impact == "HIGH"
    assert c.resource_buffer_percentage == 0.1
    assert c.planning_horizon_days == 30
    assert c.auto_approve_low_risk_plans is True
    assert c.enable_continuous_replanning is True
    assert c.replanning_interval_minutes == 60
    assert c.refine_budget_seconds == 1.0 and c.refine_workers == 2
    assert c.alert_score_threshold == 0.5 and c.time_unit_hours == 0.25
    assert c.hourly_rates["gpu"] > 0 and "base" in c.hourly_rates
    assert set(c.default_capacities) == set(DEFAULT_CAPACITIES)


def test_repo_chimera_toml_is_the_default():
    data = tomllib.loads((ROOT / "chimera.toml").read_text())
    assert PlanningConfig.from_mapping(data["planning"]) == PlanningConfig()


def test_seed_toml_table_parses_with_mixed_case_impact():
    seed = """
[planning]
max_concurrent_tasks = 10
default_task_timeout_hours = 8.0
risk_threshold_probability = 0.7
risk_threshold_impact = "High"
resource_buffer_percentage = 0.1
planning_horizon_days = 30
auto_approve_low_risk_plans = true
enable_continuous_replanning = true
replanning_interval_minutes = 60
"""
    c = PlanningConfig.from_mapping(tomllib.loads(seed)["planning"])
    assert c.risk_threshold_impact == "HIGH"
    assert c == PlanningConfig()


def test_int_accepted_for_float_keys():
    assert PlanningConfig.from_mapping({"default_task_timeout_hours": 4}).default_task_timeout_hours == 4.0


def test_partial_tables_extend_defaults():
    c = PlanningConfig.from_mapping({"hourly_rates": {"gpu": 9}, "default_capacities": {"gpu": 1}})
    assert c.hourly_rates["gpu"] == 9.0 and c.hourly_rates["cpu"] == DEFAULT_HOURLY_RATES["cpu"]
    assert c.default_capacities["gpu"] == 1.0 and c.default_capacities["cpu"] == DEFAULT_CAPACITIES["cpu"]


def test_unknown_key_names_the_key():
    with pytest.raises(ValueError, match="max_concurent_tasks"):
        PlanningConfig.from_mapping({"max_concurent_tasks": 3})


@pytest.mark.parametrize("key,value", [
    ("max_concurrent_tasks", "10"),
    ("max_concurrent_tasks", 2.5),
    ("max_concurrent_tasks", True),
    ("auto_approve_low_risk_plans", "yes"),
    ("risk_threshold_probability", "0.7"),
    ("risk_threshold_impact", 3),
    ("risk_threshold_impact", "Huge"),
    ("hourly_rates", 5),
    ("hourly_rates", {"gpu": "x"}),
    ("default_capacities", {"tpu": 1}),
    ("risk_threshold_probability", 1.5),
    ("max_concurrent_tasks", 0),
])
def test_wrong_types_and_values_raise(key, value):
    with pytest.raises(ValueError, match=key.split("_")[0]):
        PlanningConfig.from_mapping({key: value})


def test_env_overrides_and_aliases():
    c = with_env(PlanningConfig(), {
        "PLANNING_MAX_CONCURRENT_TASKS": "4",
        "PLANNING_RISK_THRESHOLD": "0.6",
        "PLANNING_REPLANNING_INTERVAL": "15",
        "PLANNING_AUTO_APPROVE_LOW_RISK_PLANS": "false",
        "PLANNING_RISK_THRESHOLD_IMPACT": "critical",
        "PLANNING_DEFAULT_CAPACITIES": '{"gpu": 2}',
        "PATH": "/usr/bin",
        "PLANNING_SOMETHING_ELSE": "ignored",
    })
    assert c.max_concurrent_tasks == 4
    assert c.risk_threshold_probability == 0.6
    assert c.replanning_interval_minutes == 15
    assert c.auto_approve_low_risk_plans is False
    assert c.risk_threshold_impact == "CRITICAL"
    assert c.default_capacities == {"gpu": 2.0}


def test_exact_env_name_beats_alias():
    c = with_env(PlanningConfig(), {"PLANNING_RISK_THRESHOLD": "0.6",
                                    "PLANNING_RISK_THRESHOLD_PROBABILITY": "0.4"})
    assert c.risk_threshold_probability == 0.4


def test_env_bad_value_raises_and_no_env_is_identity():
    base = PlanningConfig()
    assert with_env(base, {}) is base
    with pytest.raises(ValueError, match="max_concurrent_tasks"):
        with_env(base, {"PLANNING_MAX_CONCURRENT_TASKS": "many"})


def test_ids_are_deterministic_and_distinct():
    assert ids.plan_id("g1") == ids.plan_id("g1")
    assert ids.plan_id("g1") != ids.plan_id("g2")
    assert ids.plan_id("g1").startswith("plan-")
    assert ids.event_id("plans.created", "p", 1) == ids.event_id("plans.created", "p", 1)
    assert ids.event_id("a", "bc") != ids.event_id("ab", "c")
    assert ids.event_id("plans.created", "p", 1) != ids.event_id("plans.created", "p", 2)


@pytest.mark.parametrize("key,bad", [
    ("max_task_attempts", 0), ("breaker_failure_threshold", 0), ("retry_backoff_factor", 0.5),
    ("resource_heartbeat_timeout_seconds", 0), ("breaker_cooldown_seconds", -1.0),
    ("progress_interval_seconds", -1.0), ("replan_spi_threshold", 0.0), ("replan_spi_threshold", 1.5),
    ("replan_variance_hours", 0), ("retry_base_seconds", 1000.0)])
def test_live_plan_settings_are_validated(key, bad):
    with pytest.raises(ValueError, match=key):
        PlanningConfig.from_mapping({key: bad})


def test_live_plan_settings_from_env():
    c = with_env(PlanningConfig(), {"PLANNING_MAX_TASK_ATTEMPTS": "5", "PLANNING_REPLAN_SPI_THRESHOLD": "0.9"})
    assert c.max_task_attempts == 5 and c.replan_spi_threshold == 0.9
