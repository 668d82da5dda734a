"""infra.process.LocalService, the launchers' shared lifecycle, on a tiny Python child (no Java):
ready, stop, kill, temp folder removed, an early exit and a missed deadline reported with the
log's tail, an external address used instead of starting anything."""
from __future__ import annotations

import os
import sys

import pytest

from infra import process


class Child(process.LocalService):
    name, env_var, log_name, probe = "child", "CHILD_URL", "child.log", "print READY"

    def __init__(self, code: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.code = code

    @property
    def address(self) -> str:
        return "child:1"

    def _command(self):
        return [sys.executable, "-c", self.code], None

    def ready(self) -> bool:
        return "READY" in self.log_file.read_text()


SERVE = "import time; print('READY', flush=True); time.sleep(60)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_start_stop_and_the_temp_folder():
    with Child(SERVE) as c:
        pid, folder = c.proc.pid, c.data_dir
        assert c.running and c in process._live and "READY" in c.tail_log()
        c.stop()
        assert not c.running and not _alive(pid) and c not in process._live
        assert folder.exists()                 # stop() keeps the folder: start() again reuses it
        c.start()
        c.kill()
        assert not c.running
    assert c.data_dir is None and not folder.exists()


def test_early_exit_and_deadline_are_reported_with_the_log(tmp_path):
    c = Child("print('bad config'); raise SystemExit(3)", data_dir=tmp_path, start_timeout=30)
    with pytest.raises(RuntimeError, match=r"child exited early \(rc=3\); last log lines:\n.*bad config"):
        c.start()
    assert c.proc is None and tmp_path.exists()   # a given folder is kept
    slow = Child("import time; time.sleep(60)", data_dir=tmp_path / "slow", start_timeout=0.5)
    with pytest.raises(RuntimeError, match="child did not print READY at child:1 within 0s"):
        slow.start()
    assert slow.proc is None


def test_an_external_address_starts_nothing(monkeypatch):
    monkeypatch.setenv("CHILD_URL", "elsewhere:9")
    with Child.address_or_start(SERVE) as address:
        assert address == "elsewhere:9"
    assert Child.external_or_start(SERVE) == ("elsewhere:9", None)
