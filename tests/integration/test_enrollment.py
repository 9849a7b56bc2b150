"""Server enrollment and per-server sealing through a real database: two hosts, one key each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from store import ids
from store.access import reconcile_access
from store.couch import CouchClient, Database
from store.documents import Server, Status, TlsCredential, TlsCredentialState
from store.enrollment import enroll, rotate_key
from store.errors import EnrollmentConflict, NotARecipient
from store.hostkey import load_host_key, load_previous_keys, public_key_from_b64
from store.provision import init_database
from store.sealing import envelope_key_ids, open_private_key_pem, seal_private_key_pem

pytestmark = pytest.mark.integration


@pytest.fixture
def db(couch_server: Any, db_name: str) -> Database:
    client = CouchClient(couch_server.admin_url)
    init_database(client, db_name)
    return client.db(db_name)


def servers_in(db: Database, *names: str) -> dict[str, Server]:
    return {name: Server.from_doc(db.get(ids.server_id(name))) for name in names}


def pem_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_enrolling_twice_is_a_no_op(db: Database, tmp_path: Path) -> None:
    first = enroll(db, "web1", tmp_path / "a")
    assert first.action == "published"
    rev = db.get(ids.server_id("web1"))["_rev"]
    second = enroll(db, "web1", tmp_path / "a")
    assert second.action == "unchanged"
    assert second.key_id == first.key_id
    assert db.get(ids.server_id("web1"))["_rev"] == rev
    assert (first.key_file.stat().st_mode & 0o777) == 0o600


def test_enrolling_with_a_conflicting_key_is_refused(db: Database, tmp_path: Path) -> None:
    first = enroll(db, "web1", tmp_path / "a")
    with pytest.raises(EnrollmentConflict) as info:
        enroll(db, "web1", tmp_path / "b")
    message = str(info.value)
    assert first.key_id in message
    assert "rotate-key" in message
    assert Server.from_doc(db.get(ids.server_id("web1"))).key_id == first.key_id


def test_admin_pre_created_server_gets_the_key(db: Database, tmp_path: Path) -> None:
    db.put(Server(name="web3", roles=["frontend"]).to_doc())
    result = enroll(db, "web3", tmp_path / "c")
    assert result.action == "key-added"
    server = servers_in(db, "web3")["web3"]
    assert server.roles == ["frontend"]
    assert server.key_id == result.key_id


def test_rotate_key_publishes_a_new_key_and_keeps_the_old_file(db: Database, tmp_path: Path) -> None:
    first = enroll(db, "web1", tmp_path / "a")
    rotated = rotate_key(db, "web1", tmp_path / "a")
    assert rotated.key_id != first.key_id
    assert rotated.previous_key_id == first.key_id
    assert servers_in(db, "web1")["web1"].key_id == rotated.key_id
    assert [k.key_id for k in load_previous_keys(tmp_path / "a")] == [first.key_id]


def test_a_key_sealed_for_host_a_opens_on_a_and_not_on_b(db: Database, tmp_path: Path) -> None:
    enroll(db, "web1", tmp_path / "a")
    enroll(db, "web2", tmp_path / "b")
    published = servers_in(db, "web1", "web2")
    key = pem_key()
    envelope = seal_private_key_pem(key, [public_key_from_b64(published["web1"].public_key or "")])
    assert open_private_key_pem(envelope, load_host_key(tmp_path / "a")) == key
    with pytest.raises(NotARecipient):
        open_private_key_pem(envelope, load_host_key(tmp_path / "b"))


def test_access_changes_reseal_on_add_and_rekey_on_removal(db: Database, tmp_path: Path) -> None:
    for name in ("certmgr", "web1", "web2"):
        enroll(db, name, tmp_path / name)
    certmgr_key = load_host_key(tmp_path / "certmgr")
    servers = servers_in(db, "certmgr", "web1", "web2")
    key = pem_key()
    recipients = {n: public_key_from_b64(servers[n].public_key or "") for n in ("certmgr", "web1")}
    sealed = dict(seal_private_key_pem(key, recipients))
    state = TlsCredentialState(
        name="site", status=Status.PENDING, sealed_key=sealed, recipients=["certmgr", "web1"]
    )
    ciphertext = state.sealed_key["ciphertext"] if state.sealed_key else None

    widened = TlsCredential.create("site", ["www.example.com"], servers=["web1", "web2"])
    change = reconcile_access(state, widened, servers, certmgr_key, "certmgr")
    assert change.outcome == "resealed"
    assert state.sealed_key is not None and state.sealed_key["ciphertext"] == ciphertext, "the key changed"
    assert state.recipients == ["certmgr", "web1", "web2"]
    for name in ("certmgr", "web1", "web2"):
        assert open_private_key_pem(state.sealed_key, load_host_key(tmp_path / name)) == key
    assert reconcile_access(state, widened, servers, certmgr_key, "certmgr").outcome == "unchanged"

    narrowed = TlsCredential.create("site", ["www.example.com"], servers=["web2"])
    change = reconcile_access(state, narrowed, servers, certmgr_key, "certmgr")
    assert change.outcome == "rekey"
    assert state.rekey_reason is not None and '"web1"' in state.rekey_reason
    assert servers["web1"].key_id in envelope_key_ids(state.sealed_key)
    db.put(state.validated().to_doc())
    stored = TlsCredentialState.from_doc(db.get(ids.credential_state_id("site")))
    assert stored.rekey_reason == state.rekey_reason
