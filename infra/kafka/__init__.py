"""Project-started Apache Kafka 4.1.1 (KRaft, single node, no Docker). See infra/README.md."""

from .broker import (
    KAFKA_VERSION,
    KafkaBroker,
    KafkaSetupError,
    bootstrap_or_start,
    check_java,
    default_cache_dir,
    ensure_jars,
    kafka_cluster,
)
from infra.process import die_with_parent

__all__ = [
    "KAFKA_VERSION", "KafkaBroker", "KafkaSetupError", "bootstrap_or_start", "check_java", "die_with_parent",
    "default_cache_dir", "ensure_jars", "kafka_cluster",
]
