"""validate_doc_update inside a real database: the corpus verdicts and the role rules, over HTTP."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from corpus import CASES, CREDENTIAL, SERVER, STATE, Case

from store import ids
from store.couch import CouchClient, Database
from store.design import load_design_doc
from store.documents import validate_write
from store.errors import CouchError, Forbidden, Unauthorized, ValidationError

pytestmark = pytest.mark.integration

MEMBER_ROLES = ["certstore-server", "certstore-certmgr", "certstore-admin"]


@pytest.fixture
def admin_db(couch_server: Any, db_name: str) -> Iterator[Database]:
    client = CouchClient(couch_server.admin_url)
    db = client.db(couch_server.db_name(db_name))
    db.create()
    db.put_security(
        {
            "admins": {"names": [], "roles": ["certstore-admin"]},
            "members": {"names": [], "roles": MEMBER_ROLES},
        }
    )
    db.put(load_design_doc())
    yield db
    db.delete_database()
    client.close()


def current_rev(db: Database, doc_id: str) -> str | None:
    existing = db.get_or_none(doc_id)
    return None if existing is None else str(existing["_rev"])


def put_case(db: Database, case: Case) -> None:
    """Write a corpus document as an update of whatever the database holds under its id."""
    doc = copy.deepcopy(case.doc)
    doc.pop("_rev", None)
    rev = current_rev(db, case.doc_id)
    if doc.get("_deleted") and rev is None:
        # A deletion needs something to delete: first store a good document under that id.
        good = next(
            other.doc for other in CASES if other.ok and other.doc_id == case.doc_id and "type" in other.doc
        )
        rev = db.put(copy.deepcopy(good))
    if rev is not None:
        doc["_rev"] = rev
    db.put(doc)


def python_message(doc: dict[str, Any]) -> str:
    try:
        validate_write(doc)
    except ValidationError as exc:
        return str(exc)
    return ""


def test_corpus_verdicts_match_in_the_database(admin_db: Database) -> None:
    for case in CASES:
        if case.ok:
            put_case(admin_db, case)
            continue
        with pytest.raises(CouchError) as info:
            put_case(admin_db, case)
        if any(key.startswith("_") and key not in ("_id", "_rev", "_deleted") for key in case.doc):
            # CouchDB itself refuses unknown "_" members (400) before validate_doc_update runs.
            assert info.value.status in (400, 403), case.label
            continue
        assert isinstance(info.value, Forbidden), (case.label, info.value.status, info.value.reason)
        expected = python_message(case.doc).split("is not in normalised form")[0]
        assert info.value.reason.startswith(expected), (case.label, info.value.reason)


@pytest.fixture
def users(couch_server: Any, admin_db: Database) -> Iterator[dict[str, CouchClient]]:
    """Clients logged in as a server (web1, web2), the certmgr and a member without a certstore role."""
    admin = admin_db.client
    roles = {
        "web1": ["certstore-server", "server:web1"],
        "web2": ["certstore-server", "server:web2"],
        "certmgr": ["certstore-certmgr"],
        "member": ["certstore-server"],
    }
    clients = {}
    for label, user_roles in roles.items():
        name, password = f"vdu-{label}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        admin.put_user(name, password, user_roles)
        clients[label] = CouchClient(couch_server.url, user=name, password=password, backoff=())
    yield clients
    for client in clients.values():
        client.close()


def write_as(client: CouchClient, db: Database, doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(doc)
    rev = current_rev(db, doc["_id"])
    if rev is not None:
        doc["_rev"] = rev
    client.db(db.name).put(doc)


def test_a_server_writes_only_its_own_documents(admin_db: Database, users: dict[str, CouchClient]) -> None:
    write_as(users["web1"], admin_db, SERVER)
    write_as(users["web1"], admin_db, {"_id": ids.deploy_id("web1", "web"), "type": "deployment"})
    with pytest.raises(Forbidden) as info:
        write_as(users["web2"], admin_db, SERVER)
    assert (
        info.value.reason
        == 'server "web2" may only write server:web2 and deploy:web2:* documents, not server:web1'
    )
    with pytest.raises(Forbidden):
        write_as(users["web2"], admin_db, {"_id": ids.deploy_id("web1", "web"), "type": "deployment"})
    with pytest.raises(Forbidden, match="may only write server:web1"):
        write_as(users["web1"], admin_db, CREDENTIAL)


def test_the_certmgr_writes_only_its_documents(admin_db: Database, users: dict[str, CouchClient]) -> None:
    write_as(users["certmgr"], admin_db, STATE)
    with pytest.raises(Forbidden) as info:
        write_as(users["certmgr"], admin_db, CREDENTIAL)
    assert "the certmgr may only write" in info.value.reason


def test_members_without_a_certstore_role_and_anonymous_users_are_refused(
    couch_server: Any, admin_db: Database, users: dict[str, CouchClient]
) -> None:
    with pytest.raises(Forbidden) as info:
        write_as(users["member"], admin_db, CREDENTIAL)
    assert "certstore-admin" in info.value.reason
    anonymous = CouchClient(couch_server.url, backoff=())
    with pytest.raises(Unauthorized):
        anonymous.db(admin_db.name).put(copy.deepcopy(CREDENTIAL))
    anonymous.close()


def test_deleting_needs_the_writer_role_but_no_valid_fields(
    admin_db: Database, users: dict[str, CouchClient]
) -> None:
    admin_db.put(copy.deepcopy(CREDENTIAL))
    credential_rev = current_rev(admin_db, CREDENTIAL["_id"])
    assert credential_rev is not None
    with pytest.raises(Forbidden):
        users["web1"].db(admin_db.name).delete(CREDENTIAL["_id"], credential_rev)
    write_as(users["web1"], admin_db, SERVER)
    server_rev = current_rev(admin_db, SERVER["_id"])
    assert server_rev is not None
    users["web1"].db(admin_db.name).delete(SERVER["_id"], server_rev)
    admin_db.delete(CREDENTIAL["_id"], credential_rev)
