"""Dead letters: the raw record, its reason and where it came from, in headers. One format
for every writer of dead letters (the planner worker, the sinks)."""
from __future__ import annotations

SOURCE_HEADERS = ("chimera.source.topic", "chimera.source.partition", "chimera.source.offset")
SOURCE_KEY = "chimera.source.key"   # a re-keyed record's original key: its dead letter keeps it
REASON, DETAIL, SINK = "chimera.dlq.reason", "chimera.dlq.detail", "chimera.dlq.sink"
CONSUMER = "chimera.dlq.consumer"   # which executor dead-lettered it: each reads all assignments in its own group


def source_headers(topic: str, partition: int, offset: int, key: bytes | None = None) -> dict[str, bytes]:
    """Where a record came from; forwarded records keep it so dead letters point at the original."""
    out = dict(zip(SOURCE_HEADERS, (topic.encode(), str(partition).encode(), str(offset).encode())))
    if key is not None:
        out[SOURCE_KEY] = key
    return out


def source_key(headers, key: bytes | None) -> bytes | None:
    """The key a record had before it was re-keyed (or its own)."""
    return dict(headers or {}).get(SOURCE_KEY, key)


def dlq_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    return {REASON: reason.encode(), DETAIL: detail[:2000].encode(), **source_headers(topic, partition, offset)}


def source_of(headers, topic: str, partition: int, offset: int) -> tuple[str, int, int]:
    """Where a record originally came from: forwarded records carry it in headers."""
    h = dict(headers or {})
    if all(k in h for k in SOURCE_HEADERS):
        try:
            return (h[SOURCE_HEADERS[0]].decode(), int(h[SOURCE_HEADERS[1]]), int(h[SOURCE_HEADERS[2]]))
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass  # forged or broken headers: the record's own position is the truth
    return topic, partition, offset
