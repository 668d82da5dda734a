"""The demo keeps its ClickHouse history where `chimera train estimator --clickhouse` finds it,
while the rest of its temporary folder is removed."""
from __future__ import annotations

import shutil

from streams import cli


def test_the_demo_history_outlives_the_demo_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (cli.DEMO_HISTORY / "old").mkdir(parents=True)        # the previous demo's history: replaced
    stores = tmp_path / "chimera-demo-x"
    stores.mkdir()
    cli._keep_history(stores)
    assert not (cli.DEMO_HISTORY / "old").exists()
    (stores / "clickhouse" / "part").write_text("rows")   # what the sink writes there
    shutil.rmtree(stores)                                  # the demo's end
    assert (cli.DEMO_HISTORY / "part").read_text() == "rows"
