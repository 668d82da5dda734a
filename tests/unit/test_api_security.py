"""API keys, roles and the rate limiter, without a broker (they do no I/O)."""
from __future__ import annotations

import json

import pytest

from api.keys import KeyStore, digest
from api.ratelimit import RateLimiter


def test_keys_are_stored_hashed_and_authenticate(tmp_path):
    store = KeyStore.load(tmp_path / "keys.json")
    key, record = store.add("acme", "approver", "alice")
    store.save()
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and key.split("_")[2] not in text
    assert record.sha256 == digest(key) and record.sha256 in text
    again = KeyStore.load(tmp_path / "keys.json")
    found = again.authenticate(key)
    assert found is not None and (found.tenant, found.role, found.principal) == ("acme", "approver", "alice")
    assert json.loads(text)["keys"][0]["role"] == "approver"


@pytest.mark.parametrize("presented", [None, "", "nonsense", "chk_deadbeef_wrong", "Bearer x"])
def test_unknown_or_malformed_keys_are_refused(tmp_path, presented):
    store = KeyStore.load(tmp_path / "keys.json")
    store.add("acme", "viewer")
    assert store.authenticate(presented) is None


def test_a_right_key_id_with_a_wrong_secret_is_refused(tmp_path):
    store = KeyStore.load(tmp_path / "keys.json")
    key, record = store.add("acme", "admin")
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_a_key_revoked_or_added_in_the_file_counts_without_a_restart(tmp_path):
    """Another process (`chimera keys`, a Secret updated in place) edits the file; a running
    API's store follows it at its next check."""
    path = tmp_path / "keys.json"
    admin = KeyStore.load(path)
    old_key, old = admin.add("acme", "approver")
    admin.save()
    serving = KeyStore.load(path, reload_s=0.0)
    assert serving.authenticate(old_key) is not None
    admin.revoke(old.key_id)
    new_key, _ = admin.add("acme", "viewer")
    admin.save()
    assert serving.authenticate(old_key) is None
    assert serving.authenticate(new_key).role == "viewer"


def test_a_file_that_cannot_be_read_keeps_the_keys_in_force(tmp_path, caplog):
    path = tmp_path / "keys.json"
    admin = KeyStore.load(path)
    key, _ = admin.add("acme", "viewer")
    admin.save()
    serving = KeyStore.load(path, reload_s=0.0)
    path.write_text('{"keys": [{"half-written')
    assert serving.authenticate(key) is not None
    assert "not reloaded" in caplog.text


def test_roles_grant_what_they_name():
    store = KeyStore()
    grants = {role: store.add("t", role)[1] for role in ("viewer", "planner", "approver", "admin")}
    assert [r for r, k in grants.items() if k.may("approve")] == ["approver", "admin"]
    assert [r for r, k in grants.items() if k.may("plan")] == ["planner", "admin"]
    assert all(k.may("read") for k in grants.values())
    with pytest.raises(ValueError):
        store.add("t", "root")
    with pytest.raises(ValueError):
        store.add("", "viewer")


def test_rate_limiter_allows_a_burst_then_refills_at_the_rate():
    now = [0.0]
    lim = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    assert [lim.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = lim.take("k")
    assert wait == pytest.approx(1.0)
    assert lim.take("other") == 0.0          # per key
    now[0] += 1.0
    assert lim.take("k") == 0.0
    assert lim.take("k") > 0


def test_the_cli_acts_as_the_authenticated_principal_only():
    """A SASL login names the actor; a username without SASL authenticates nobody."""
    from topics import security
    sasl = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "ops", "KAFKA_SASL_PASSWORD": "x"}
    assert security.principal(sasl) == "User:ops"
    assert security.principal({**sasl, "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}) is None
    assert security.principal({}) is None
