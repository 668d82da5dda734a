"""The last resort for Kafka calls that block past their own timeout (executor/deadline.py)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from executor.deadline import EXIT_STUCK, Deadline

REPO = Path(__file__).resolve().parents[2]


def test_a_call_past_its_timeout_and_grace_is_reported_once_and_one_in_time_is_not():
    stuck: list[str] = []
    d = Deadline(grace_s=0.2, on_stuck=stuck.append)
    try:
        with d.within("quick", 5.0):
            pass
        with d.within("slow", 0.1):
            time.sleep(2.0)
        time.sleep(1.0)          # the watcher has long woken again: a finished call is not reported
    finally:
        d.close()
    assert stuck == ["slow"]


def test_by_default_the_process_ends_with_exit_stuck_and_says_why():
    code = ("import logging, time; logging.basicConfig(); from executor.deadline import Deadline; "
            "d = Deadline(grace_s=0.1)\nwith d.within('send_offsets_to_transaction', 0.1): time.sleep(30)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == EXIT_STUCK, run.stderr
    assert "send_offsets_to_transaction is blocked past its timeout" in run.stderr


def test_an_embedded_executor_reports_itself_stuck_and_never_ends_its_host(tmp_path):
    """Only the service (executor.service main) exits: an Executor inside another process (a
    test, a notebook) must not take that process down with it."""
    from executor.service import Executor, ExecutorConfig
    ex = Executor(ExecutorConfig("127.0.0.1:1", executor_id="embedded", work_root=tmp_path))
    try:
        assert not ex.cfg.exit_when_stuck
        ex.deadline.grace_s = 0.1
        with ex.deadline.within("send_offsets_to_transaction", 0.1):
            time.sleep(1.5)      # this process is still here afterwards: the test goes on
        assert ex.stuck == "send_offsets_to_transaction"
        assert "blocked past its timeout" in ex.liveness()
    finally:
        ex.deadline.close()
        for lane in ex.lanes:
            lane.consumer.close()
        if ex.control is not None:
            ex.control.close()
        ex.sandbox.close()


def test_the_executor_service_ends_its_process_when_stuck():
    from executor.service import ExecutorConfig, config_from_args
    assert config_from_args(["--bootstrap", "127.0.0.1:1", "--id", "svc"]).exit_when_stuck
    assert not ExecutorConfig("127.0.0.1:1").exit_when_stuck
