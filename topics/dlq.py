"""Dead-letter headers: the reason and where the record came from (the format the planner
worker's streams/dlq.py writes; the sinks, which may import only topics/, use this copy)."""
from __future__ import annotations

SOURCE_HEADERS = ("chimera.source.topic", "chimera.source.partition", "chimera.source.offset")
REASON, DETAIL, SINK = "chimera.dlq.reason", "chimera.dlq.detail", "chimera.dlq.sink"


def dlq_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    return {REASON: reason.encode(), DETAIL: detail[:2000].encode(),
            **dict(zip(SOURCE_HEADERS, (topic.encode(), str(partition).encode(), str(offset).encode())))}
