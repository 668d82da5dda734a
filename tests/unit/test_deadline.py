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
