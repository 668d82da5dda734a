"""A last resort for Kafka calls that block past their own timeout.

librdkafka's transactional calls can wait for ever on a stale group or transaction coordinator
(`send_offsets_to_transaction` after the broker restarted: confluentinc/librdkafka#5456 and
#5511, both open), whatever timeout they were given. Nothing can interrupt such a call from
Python, so a thread watches it: past its timeout plus a grace period the process ends with
EXIT_STUCK, and the supervisor (k8s, compose, `chimera up`) starts a fresh one. Nothing is lost:
the transaction was never committed, so its tasks run again for whoever owns their partitions.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Callable, Iterator

log = logging.getLogger("chimera.executor")

EXIT_STUCK = 75   # EX_TEMPFAIL: try again (a fresh process)


class Deadline:
    def __init__(self, grace_s: float = 30.0, on_stuck: Callable[[str], None] | None = None) -> None:
        self.grace_s = grace_s
        self.on_stuck = on_stuck or _exit
        self._call: tuple[str, float] | None = None     # (what, give up at: monotonic)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def within(self, what: str, timeout_s: float) -> Iterator[None]:
        """Run the block as a call given `timeout_s`: if it has not returned `grace_s` after
        that, `on_stuck` is called (by default: the process ends)."""
        self._ensure_thread()
        with self._lock:
            self._call = (what, time.monotonic() + timeout_s + self.grace_s)
        try:
            yield
        finally:
            with self._lock:
                self._call = None

    def close(self) -> None:
        self._stop.set()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="kafka-deadline", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                call = self._call
            if call is not None and time.monotonic() > call[1]:
                with self._lock:
                    self._call = None
                self.on_stuck(call[0])


def _exit(what: str) -> None:
    log.critical("%s is blocked past its timeout (librdkafka#5456): exiting with %d so that the "
                 "supervisor starts a fresh executor; its uncommitted tasks run again", what, EXIT_STUCK)
    logging.shutdown()
    os._exit(EXIT_STUCK)
