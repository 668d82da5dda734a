"""Avro values in the Confluent wire format: magic byte 0, 4-byte schema id, body.

Schema ids come from a Schema Registry when SCHEMA_REGISTRY_URL is set, otherwise
from the checked-in manifest (topics/schemas/manifest.json). Decoding resolves the
writer's schema (found by id) against the topic's current reader schema, so old
records stay readable after a backward-compatible change.
"""
from __future__ import annotations

import io
import json
import os
import struct
import urllib.error
import urllib.request
from functools import lru_cache

import fastavro
from fastavro.validation import validate

from topics import schemas
from topics.registry import spec

MAGIC = 0
_HEADER = struct.Struct(">bI")


class SerdeError(ValueError):
    """A record that cannot be encoded or decoded; `reason` goes into DLQ headers."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ManifestIds:
    """Schema ids from the checked-in manifest: no registry needed."""

    def __init__(self) -> None:
        self._by_id = {sid: text for name in schemas.ORDER for _, sid, text in schemas.history(name)}
        self._latest = {}
        for name in schemas.ORDER:
            versions = schemas.history(name)
            if not versions or schemas.fingerprint(versions[-1][2]) != schemas.fingerprint(schemas.expanded(name)):
                raise RuntimeError(f"schema {name} changed without a release: run `python -m topics.schemas`")
            self._latest[name] = versions[-1][1]

    def id_for(self, schema_name: str) -> int:
        return self._latest[schema_name]

    def schema_json(self, schema_id: int) -> str | None:
        return self._by_id.get(schema_id)


class RegistryIds:
    """Schema ids from a Confluent-compatible Schema Registry (subject `<topic>-value`)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}

    def _call(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"schema registry {self.url} unreachable: {exc}") from exc

    def id_for(self, schema_name: str) -> int:
        if schema_name not in self._ids:
            text = schemas.expanded(schema_name)
            self._ids[schema_name] = self._call(f"/subjects/{schema_name}-value/versions", {"schema": text})["id"]
            self._schemas[self._ids[schema_name]] = text
        return self._ids[schema_name]

    def schema_json(self, schema_id: int) -> str | None:
        if schema_id not in self._schemas:
            try:
                self._schemas[schema_id] = self._call(f"/schemas/ids/{schema_id}")["schema"]
            except ConnectionError:
                return None
        return self._schemas[schema_id]


@lru_cache(maxsize=None)
def default_ids():
    url = os.environ.get("SCHEMA_REGISTRY_URL")
    return RegistryIds(url) if url else ManifestIds()


class Serde:
    """Encode and decode the values of one topic."""

    def __init__(self, topic: str, ids=None) -> None:
        self.topic = topic
        self.schema_name = spec(topic).schema_name
        self.ids = ids or default_ids()
        self.schema = schemas.current(self.schema_name)
        self._header = _HEADER.pack(MAGIC, self.ids.id_for(self.schema_name))
        self._current = schemas.fingerprint(schemas.expanded(self.schema_name))
        self._readers: dict[int, tuple] = {}   # schema id -> (writer schema, reader schema or None)

    @property
    def header(self) -> bytes:
        """The wire-format header of the values this serde writes (magic byte, schema id)."""
        return self._header

    def _reader(self, schema_id: int) -> tuple | None:
        """The writer's parsed schema, and the reader schema to resolve to: None when the writer
        wrote the current schema (same parsing canonical form: the same bytes layout, nothing to
        resolve; fastavro's resolution costs ~5 us a record)."""
        got = self._readers.get(schema_id)
        if got is None:
            writer_json = self.ids.schema_json(schema_id)
            if writer_json is None:
                return None
            same = schemas.fingerprint(writer_json) == self._current
            got = self._readers[schema_id] = (self.schema if same else schemas.parsed(writer_json),
                                              None if same else self.schema)
        return got

    def encode(self, record: dict, *, strict: bool = False) -> bytes:
        """Avro bytes in the wire format. `strict` validates every field first (for records
        from outside: the writer alone would, e.g., truncate 1.5 into a long)."""
        if strict:
            try:
                validate(record, self.schema, raise_errors=True)
            except Exception as why:
                raise SerdeError("schema_mismatch", f"{self.topic}: {why}") from why
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            fastavro.schemaless_writer(buf, self.schema, record)
        except Exception as exc:  # the writer's message is terse; validation says which field
            try:
                validate(record, self.schema, raise_errors=True)
            except Exception as why:
                raise SerdeError("schema_mismatch", f"{self.topic}: {why}") from exc
            raise SerdeError("schema_mismatch", f"{self.topic}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | None) -> dict:
        if not data or len(data) < _HEADER.size:
            raise SerdeError("not_avro", f"{len(data or b'')} bytes: shorter than the wire-format header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise SerdeError("not_avro", f"magic byte {magic}, expected {MAGIC}")
        pair = self._reader(schema_id)
        if pair is None:
            raise SerdeError("unknown_schema_id", f"schema id {schema_id} is not known")
        buf = io.BytesIO(data)
        buf.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, *pair)
        except Exception as exc:
            raise SerdeError("schema_mismatch", f"body does not match schema id {schema_id}: {exc}") from exc
        if buf.tell() != len(data):
            raise SerdeError("schema_mismatch", f"{len(data) - buf.tell()} trailing bytes after the record")
        return record


@lru_cache(maxsize=None)
def serde(topic: str) -> Serde:
    """The shared serde of a topic."""
    return Serde(topic)
