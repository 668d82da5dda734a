"""Writes of the API to Kafka: Avro-encoded, acknowledged by the broker (acks=all,
idempotent) before the request is answered, so a 202 means the record is in the topic."""
from __future__ import annotations

import threading
import time

from confluent_kafka import Producer

from topics.serde import serde


class WriteFailed(RuntimeError):
    """The broker did not take a record in time (answered 503)."""


class Writer:
    def __init__(self, bootstrap: str, timeout_s: float = 10.0, kafka_config: dict | None = None) -> None:
        self.timeout_s = timeout_s
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "message.timeout.ms": int(timeout_s * 1000), "client.id": "chimera-api",
                                  # Kafka's (and aiokafka's) partitioner: a plan's records must land in the
                                  # partition the planner owns for it (librdkafka's default is CRC32)
                                  "partitioner": "murmur2_random",
                                  **(kafka_config or {})})

    def send(self, topic: str, key: str, value: dict, headers: dict[str, str] | None = None) -> None:
        """Encode (a bad record raises SerdeError before anything is sent), send, wait for the ack."""
        data = serde(topic).encode(value, strict=True)
        if self.producer is None:
            raise WriteFailed(f"{topic}: the API is shutting down")
        done = threading.Event()
        result: list = []

        def delivered(err, msg) -> None:
            result.append(err)
            done.set()

        self.producer.produce(topic, key=key.encode(), value=data, headers=list((headers or {}).items()),
                              on_delivery=delivered)
        deadline = time.monotonic() + self.timeout_s + 1.0
        while not done.is_set() and time.monotonic() < deadline:
            self.producer.poll(0.05)
        if not done.is_set() or result[0] is not None:
            raise WriteFailed(f"{topic}: {result[0] if result else 'no acknowledgement in time'}")

    def close(self) -> None:
        """Flush, then let the producer go: librdkafka's threads live as long as the object and
        would go on reconnecting to a broker that is gone (a test's, a stopped stack's)."""
        if self.producer is not None:
            self.producer.flush(5)
            self.producer = None
