"""chimera.toml and PLANNING_* environment variables reach the planner's config."""
import pytest

from streams.settings import REPO, load, load_planning


def test_repo_config_is_the_default():
    cfg = load_planning(env={})
    assert cfg.max_concurrent_tasks == 10 and cfg.auto_approve_low_risk_plans is True
    assert (REPO / "chimera.toml").exists()


def test_file_then_env(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[planning]\nmax_concurrent_tasks = 3\nrisk_threshold_probability = 0.5\n")
    cfg = load_planning(env={"CHIMERA_CONFIG": str(f), "PLANNING_MAX_CONCURRENT_TASKS": "5"})
    assert cfg.max_concurrent_tasks == 5 and cfg.risk_threshold_probability == 0.5


def test_bad_config_is_a_clear_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[planning]\nmax_concurent_tasks = 3\n")
    with pytest.raises(ValueError, match="max_concurent_tasks"):
        load_planning(env={"CHIMERA_CONFIG": str(f)})
    f.write_text("[planning\n")
    with pytest.raises(ValueError, match="c.toml"):
        load_planning(env={"CHIMERA_CONFIG": str(f)})
    with pytest.raises(FileNotFoundError):
        load_planning(env={"CHIMERA_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ValueError, match="PLANNING_MAX_CONCURRENT_TASKS"):
        load_planning(env={"PLANNING_MAX_CONCURRENT_TASKS": "many"})


def test_bootstrap_from_env():
    assert load(env={"KAFKA_BOOTSTRAP": "h:1"}).bootstrap == "h:1"
