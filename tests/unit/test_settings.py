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


def test_limits_and_worker_settings_load_from_the_file_and_the_environment(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[limits]\nmax_tasks_per_goal = 50\n[worker]\nstore = \"memory://\"\nwatchdog_stall_s = 30\n")
    s = load(env={"CHIMERA_CONFIG": str(f), "LIMITS_MAX_TITLE_CHARS": "80", "CHIMERA_WATCHDOG_STALL_S": "7"})
    assert s.limits.max_tasks_per_goal == 50 and s.limits.max_title_chars == 80
    assert s.worker.store == "memory://" and s.worker.watchdog_stall_s == 7.0
    defaults = load(env={})
    assert defaults.limits.max_tasks_per_goal == 500 and defaults.worker.store == "rocksdb://"


@pytest.mark.parametrize("text,env", [("[limits]\nmax_tasks = 5\n", {}), ("[limits]\nmax_task_hours = -1\n", {}),
                                      ("[worker]\nwatchdog = 1\n", {}), ("", {"LIMITS_MAX_TASK_HOURS": "lots"}),
                                      ("", {"CHIMERA_WATCHDOG_STALL_S": "soon"})])
def test_bad_limits_or_worker_settings_are_refused_with_the_key(tmp_path, text, env):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ValueError):
        load(env={"CHIMERA_CONFIG": str(f), **env})


def test_memory_settings_from_toml_and_env(tmp_path):
    from streams.settings import MemorySettings, load

    cfg = tmp_path / "c.toml"
    cfg.write_text('[memory]\nthreshold = 0.9\nenabled = true\n')
    s = load(env={"CHIMERA_CONFIG": str(cfg), "MEMORY_ENABLED": "false", "MEMORY_TIMEOUT_S": "0.5"})
    assert s.memory.threshold == 0.9 and s.memory.enabled is False and s.memory.timeout_s == 0.5
    assert MemorySettings.from_mapping({}, {"MEMORY_ENABLED": "1"}).enabled is True
    with pytest.raises(ValueError):
        MemorySettings.from_mapping({}, {"MEMORY_ENABLED": "maybe"})
    with pytest.raises(ValueError):
        MemorySettings.from_mapping({"thresold": 0.5}, {})


def test_auto_train_is_off_by_default_and_set_by_the_file_or_env(tmp_path):
    assert load(env={}).triton.auto_train is False
    cfg = tmp_path / "c.toml"
    cfg.write_text('[triton]\nauto_train = true\ntrain_interval_s = 60\n')
    s = load(env={"CHIMERA_CONFIG": str(cfg)}).triton
    assert s.auto_train is True and s.train_interval_s == 60.0
    assert load(env={"CHIMERA_CONFIG": str(cfg), "TRITON_AUTO_TRAIN": "off"}).triton.auto_train is False


def test_stores_from_the_file_and_the_stores_own_environment_names(tmp_path):
    """[stores]: one place for where the sinks' data lives and which servers replace the local
    stores; the environment uses the names the stores' tools know (CLICKHOUSE_URL, NEO4J_URI...)."""
    from streams.settings import REPO, StoreSettings, load, load_stores

    d = load_stores(env={})
    assert d.dir == str(REPO / ".data") and d.clickhouse_dir == REPO / ".data" / "clickhouse"
    assert (d.clickhouse_url, d.chroma_url, d.neo4j_uri, d.neo4j_auth) == ("", "", "", None)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[stores]\ndir = "elsewhere"\nneo4j_uri = "bolt://db:7687"\n')
    s = load_stores(env={"CHIMERA_CONFIG": str(cfg), "CLICKHOUSE_URL": "http://ch:8123", "NEO4J_USER": "neo4j",
                         "NEO4J_PASSWORD": "pw"})
    assert s.dir == str(REPO / "elsewhere")   # relative: from the repository, not the working directory
    assert (s.clickhouse_url, s.neo4j_uri, s.neo4j_auth) == ("http://ch:8123", "bolt://db:7687", ("neo4j", "pw"))
    s = load_stores(env={"CHIMERA_CONFIG": str(cfg), "CHIMERA_STORES_DIR": str(tmp_path), "NEO4J_URI": "bolt://x:1"})
    assert (s.chroma_dir, s.neo4j_uri) == (tmp_path / "chroma", "bolt://x:1")
    with pytest.raises(ValueError, match="unknown stores setting"):
        StoreSettings.from_mapping({"clickhouse": "x"}, {})
    # the planner's memory reads the Chroma sink's folder, wherever [stores] puts it, unless told otherwise
    assert load(env={"CHIMERA_STORES_DIR": str(tmp_path)}).memory.dir == str(tmp_path / "chroma")
    assert load(env={"CHIMERA_STORES_DIR": str(tmp_path), "MEMORY_DIR": "/m"}).memory.dir == "/m"


def test_the_sinks_open_their_stores_where_the_settings_say(tmp_path, monkeypatch):
    """No second meaning of CHIMERA_DATA_DIR (the worker's Faust folder) and no folder relative to
    wherever a sink was started: the sinks' default folders are [stores] dir's."""
    from sinks import chroma, clickhouse

    monkeypatch.setenv("CHIMERA_DATA_DIR", str(tmp_path / "faust"))
    monkeypatch.setenv("CHIMERA_STORES_DIR", str(tmp_path / "stores"))
    monkeypatch.chdir(tmp_path)
    assert clickhouse.default_dir() == tmp_path / "stores" / "clickhouse"
    assert chroma.default_dir() == tmp_path / "stores" / "chroma"
    assert clickhouse.server_url() == ""
    monkeypatch.setenv("CLICKHOUSE_URL", "http://ch:8123")
    assert clickhouse.server_url() == "http://ch:8123"
