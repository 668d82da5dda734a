"""Project-started Neo4j Community 5.26 (embedded, Bolt on loopback, no Docker). See infra/README.md."""
from .server import NEO4J_VERSION, Neo4jServer, Neo4jSetupError, ensure_jars, neo4j_uri_or_start

__all__ = ["NEO4J_VERSION", "Neo4jServer", "Neo4jSetupError", "ensure_jars", "neo4j_uri_or_start"]
