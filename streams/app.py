"""A Faust app built from Settings, with what every Chimera worker needs: raw-bytes topics,
publishing that encodes everything before it sends anything, and dead letters that can
never hold an agent for longer than a few seconds.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Iterable, Sequence

import faust
from prometheus_client import Counter

from streams import faust_fixes
from streams import metrics
from topics import logs
from streams.codec import Out, encode_value
from streams.producer import AsyncProducer
from topics.dlq import dlq_headers, source_key, source_of
from streams.settings import Settings
from topics import registry as T, security, tracing
from topics.serde import serde

log = logging.getLogger("chimera.app")

DEAD_LETTERS = Counter("layer2_validation_errors_total", "Records sent to a dead-letter topic", ["topic", "reason"])
DEAD_LETTER_FAILURES = Counter("chimera_dead_letter_failures_total", "Dead letters that could not be sent",
                               ["topic"])
IGNORED = Counter("chimera_records_ignored_total", "Records that changed nothing (replays), by reason", ["reason"])


def create_app(settings: Settings) -> faust.App:
    """The Faust app of one worker kind; every timeout is set deliberately (Faust's default
    producer request timeout is 1,200 s: one unsendable record would stall an agent that long)."""
    w = settings.worker
    timeout = w.producer_timeout_s
    faust_fixes.apply()
    os.makedirs(settings.data_dir, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store=w.store,
        topic_partitions=T.PLAN_PARTITIONS,
        topic_allow_declare=True,
        topic_disable_leader=True,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_request_timeout=max(timeout, 10.0),
        producer_request_timeout=timeout,
        producer_max_request_size=1_048_576,
        processing_guarantee=w.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=settings.data_dir + "/{conf.name}",
        key_serializer="json",      # tables; our topics say "raw" themselves
        value_serializer="json",
        **_credentials(),
        **({"logging_config": logs.dict_config(settings.app_id, os.environ.get("CHIMERA_LOG_LEVEL", "INFO").upper())}
           if os.environ.get("CHIMERA_LOG_FORMAT") == "json" else {}),
    )


def _credentials() -> dict:
    """Faust's broker credentials from KAFKA_SECURITY_* (topics/security.py); none for PLAINTEXT."""
    sec = security.aiokafka()
    if not sec:
        return {}
    if sec["security_protocol"].startswith("SASL"):
        return {"broker_credentials": faust.SASLCredentials(
            username=sec["sasl_plain_username"], password=sec["sasl_plain_password"],
            mechanism=sec["sasl_mechanism"], ssl_context=sec.get("ssl_context"))}
    return {"broker_credentials": faust.SSLCredentials(sec["ssl_context"])}


class Publisher:
    """Raw-bytes topics of one app, publishing and dead-lettering."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._topics: dict[str, faust.TopicT] = {}
        # linger: with 0 every record went in its own produce request (librdkafka's threads and
        # the broker paid per request); 1 ms lets a goal's outputs share one
        self.producer = AsyncProducer(settings.bootstrap, timeout_s=settings.worker.producer_timeout_s,
                                      linger_ms=settings.worker.producer_linger_ms, client_id=settings.app_id)

    def topic(self, name: str) -> faust.TopicT:
        if name not in self._topics:
            s = T.spec(name)
            self._topics[name] = self.app.topic(name, partitions=s.partitions, key_type=bytes, value_type=bytes,
                                                key_serializer="raw", value_serializer="raw")
        return self._topics[name]

    def sources(self, names: Sequence[str]) -> faust.TopicT:
        """One channel over several topics (an agent that reads them all)."""
        return self.app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw")

    @staticmethod
    def encode(outs: Iterable[Out]) -> list[tuple[str, bytes, bytes]]:
        """Every record's bytes, or an exception before anything was sent (counted for the
        layer2_* metrics once all encoded)."""
        outs = list(outs)
        encoded = [(o.topic, o.key.encode(), encode_value(o)) for o in outs]
        metrics.observe_outputs(outs)
        return encoded

    async def send(self, encoded: Iterable[tuple[str, bytes, bytes]]) -> None:
        """Send the records and wait until the broker has them all. The caller saves the
        state only after this: a state in the changelog then always has its records
        downstream, so a crash can never leave a plan stored but unpublished (its goal
        would be replayed as a duplicate). One round trip per input record, in parallel
        for its outputs."""
        futures = self.send_nowait(encoded)
        if futures:
            await asyncio.gather(*futures)

    def send_nowait(self, encoded: Iterable[tuple[str, bytes, bytes]]) -> list[asyncio.Future]:
        """Hand the records to the producer now; a future per record says when the broker has it."""
        headers = tracing.kafka_headers("planner.publish") or None   # continue the handled record's trace
        return [self.producer.send(topic, key, value, headers) for topic, key, value in encoded]

    async def forward(self, topic: str, key: bytes, value: bytes, headers) -> None:
        """One record, sent and acknowledged before the caller moves on."""
        await self.producer.send(topic, key, value, headers)

    async def dead_letter(self, event, reason: str, detail: str) -> None:
        """The raw record to <original topic>.dlq with its key, the reason and where it came
        from. A dead letter that cannot be sent in time is logged and counted, not retried."""
        msg = event.message
        src_topic, partition, offset = source_of(msg.headers, msg.topic, msg.partition, msg.offset)
        if src_topic not in T.BY_NAME or not T.BY_NAME[src_topic].has_dlq:  # headers name no topic of ours
            src_topic, partition, offset = msg.topic, msg.partition, msg.offset
        dlq = T.spec(src_topic).dlq
        DEAD_LETTERS.labels(src_topic, reason).inc()
        key = (source_key(msg.headers, msg.key) or b"").decode("utf-8", "replace")
        log.warning("dead letter %s[%s]@%s: %s: %s", src_topic, partition, offset, reason, detail[:500],
                    extra={"plan_id": key if key.startswith("plan-") else "", "goal_id": "" if key.startswith("plan-")
                           else key, "trace_id": tracing.trace_id_of(tracing.parent_of(msg.headers))})
        try:
            fut = await asyncio.wait_for(
                self.topic(dlq).send(key=source_key(msg.headers, msg.key), value=msg.value,
                                     headers=dlq_headers(reason, detail, src_topic, partition, offset)),
                self.settings.worker.dead_letter_timeout_s)
            fut.add_done_callback(lambda f: self._check_sent(f, dlq))
        except Exception as exc:  # the broker refused or timed out: say so, keep planning
            DEAD_LETTER_FAILURES.labels(dlq).inc()
            metrics.INTEGRATION_ERRORS.labels("kafka").inc()
            log.error("could not dead-letter %s[%s]@%s to %s: %s", src_topic, partition, offset, dlq, exc)

    @staticmethod
    def _check_sent(fut, dlq: str) -> None:
        exc = fut.exception() if not fut.cancelled() else None
        if exc is not None:
            DEAD_LETTER_FAILURES.labels(dlq).inc()
            log.error("dead letter to %s failed: %s", dlq, exc)


def ignored(reason: str, detail: str = "") -> None:
    IGNORED.labels(reason).inc()
    log.debug("ignored (%s): %s", reason, detail)
