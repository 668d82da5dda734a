"""Moved to topics/dlq.py (the sinks need it too and may import only topics/); kept as an alias."""
from topics.dlq import SOURCE_HEADERS, dlq_headers, source_headers, source_of  # noqa: F401
