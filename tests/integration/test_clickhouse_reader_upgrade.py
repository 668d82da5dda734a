"""A ClickHouse folder an older sink wrote (before plans had status and cost_estimate) is
brought up to the schema when a reader opens it: `chimera train decomposer` on it failed with
UNKNOWN_IDENTIFIER `status`. Its own module: chdb opens one folder per process at a time."""
from __future__ import annotations


def test_a_folder_of_an_older_schema_reads_with_the_new_columns(tmp_path):
    from sinks.clickhouse import ClickHouseStore, reader
    from triton_models import decomposer_history as H

    old = ClickHouseStore(tmp_path / "ch")
    old.setup()
    old.client.command("ALTER TABLE chimera.plans DROP COLUMN status")
    old.client.command("ALTER TABLE chimera.plans DROP COLUMN cost_estimate")
    assert "status" not in old.query("SELECT * FROM chimera.plans LIMIT 0")[0]
    old.close()

    r = reader(tmp_path / "ch")
    try:
        assert {"status", "cost_estimate"} <= set(r.query("SELECT * FROM chimera.plans LIMIT 0")[0])
        assert H.from_clickhouse(r, log=lambda *_: None) == []      # the history's SQL runs: no plans yet
    finally:
        r.close()
