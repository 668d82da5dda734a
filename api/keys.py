"""API keys: random secrets handed out once, stored only as SHA-256 hashes, each bound to a
tenant and a role.

A key is `chk_<key_id>_<secret>`: the key id is public (it names the key in audit records and
logs), the 32-byte secret never leaves the caller. A plain SHA-256 is enough for 256 random
bits (no dictionary to guess from); the comparison is constant-time.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("chimera.api")

ROLES = ("viewer", "planner", "approver", "admin")
# what each role may do; every role reads its own tenant's plans
PERMISSIONS = {
    "viewer": frozenset({"read"}),
    "planner": frozenset({"read", "plan"}),          # create, feedback, cancel, mitigate
    "approver": frozenset({"read", "approve"}),
    "admin": frozenset({"read", "plan", "approve", "admin"}),
}
PREFIX = "chk_"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    sha256: str
    tenant: str
    role: str
    principal: str        # who acts: approvals and audit records name this, never a request field
    created_at_ms: int = 0

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    parts = key.split("_")
    return parts[1] if key.startswith(PREFIX) and len(parts) == 3 and parts[1] else None


class KeyStore:
    """The keys of one file (JSON, hashes only); `authenticate` is the one check of a key."""

    def __init__(self, keys: dict[str, ApiKey] | None = None, path: Path | None = None,
                 reload_s: float = 1.0) -> None:
        self.keys = dict(keys or {})
        self.path = path
        self.reload_s = reload_s
        self._stamp = _stamp(path) if path is not None else None
        self._checked = time.monotonic()

    @classmethod
    def load(cls, path: str | os.PathLike, reload_s: float = 1.0) -> "KeyStore":
        path = Path(path)
        return cls(_read(path), path, reload_s)

    def refresh(self) -> None:
        """Keys added or revoked in the file (`chimera keys`, a k8s Secret updated in place) count
        in every API replica within `reload_s`, without a restart. A file that cannot be read
        keeps the keys in force (logged), so a half-written edit locks nobody out."""
        if self.path is None or time.monotonic() - self._checked < self.reload_s:
            return
        self._checked = time.monotonic()
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        try:
            self.keys = _read(self.path)
            self._stamp = stamp
        except (ValueError, TypeError, OSError) as exc:
            log.error("API keys file %s not reloaded, the keys in force stay: %s", self.path, exc)

    def save(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": [asdict(k) for k in self.keys.values()]}, indent=2, sort_keys=True))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)

    def add(self, tenant: str, role: str, principal: str = "") -> tuple[str, ApiKey]:
        """A new key: (the secret key, shown once; its stored record)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not tenant or not tenant.replace("-", "").replace(".", "").isalnum():
            raise ValueError("tenant must be a non-empty name of letters, digits, '-' and '.'")
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32).replace('_', '-')}"
        record = ApiKey(key_id, digest(key), tenant, role, principal or f"{role}@{tenant}/{key_id}",
                        int(time.time() * 1000))
        self.keys[key_id] = record
        return key, record

    def revoke(self, key_id: str) -> bool:
        return self.keys.pop(key_id, None) is not None

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key record for a presented key, or None (unknown, malformed or wrong secret)."""
        if not presented:
            return None
        self.refresh()
        kid = key_id_of(presented)
        record = self.keys.get(kid) if kid else None
        if record is None:
            hmac.compare_digest(digest(presented), "0" * 64)   # same work for unknown ids
            return None
        return record if hmac.compare_digest(digest(presented), record.sha256) else None


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except FileNotFoundError:
        return None


def _read(path: Path) -> dict[str, ApiKey]:
    if not path.exists():
        return {}
    keys = {}
    for k in json.loads(path.read_text()).get("keys", []):
        key = ApiKey(**k)
        if key.role not in ROLES:
            raise ValueError(f"{path}: key {key.key_id} has unknown role {key.role!r}")
        keys[key.key_id] = key
    return keys
