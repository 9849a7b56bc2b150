"""The document models: the shared corpus, round trips, and the messages an admin reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from corpus import CASES, CREDENTIAL, CREDENTIAL_FULL, SEALED, SERVER, STATE, Case, variant

from store import documents
from store.documents import (
    Actions,
    Deployment,
    ErrorEntry,
    HandledActions,
    Outcome,
    RevokeAction,
    Server,
    TlsCredential,
    TlsCredentialState,
    validate_document,
    validate_write,
)
from store.errors import PlaintextPrivateKey, ValidationError
from store.names import ChallengeKind, KeyType, RevocationReason, Status

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("case", CASES, ids=[case.label for case in CASES])
def test_corpus(case: Case) -> None:
    if case.ok:
        validate_write(case.doc)
        return
    with pytest.raises(ValidationError) as info:
        validate_write(case.doc)
    assert info.value.field == case.field, str(info.value)
    assert isinstance(info.value, PlaintextPrivateKey) == case.private_key
    if case.field != "_id":
        assert str(info.value).startswith(f"{case.doc_id}: {case.field}"), str(info.value)
        assert info.value.doc_id == case.doc_id


def test_corpus_is_big_and_covers_every_type() -> None:
    assert len(CASES) >= 40
    good_types = {case.doc.get("type") for case in CASES if case.ok and not case.doc.get("_deleted")}
    assert good_types == set(documents.MODELS)
    bad_types = {case.doc.get("type") for case in CASES if not case.ok}
    assert set(documents.MODELS) <= bad_types


GOOD = [case for case in CASES if case.ok and not case.doc.get("_deleted")]


@pytest.mark.parametrize("case", GOOD, ids=[case.label for case in GOOD])
def test_round_trip(case: Case) -> None:
    model = validate_document(case.doc)
    written = model.to_doc()
    # to_doc writes defaults the stored document may leave out, and nothing else changes.
    assert {key: written[key] for key in case.doc} == case.doc
    assert validate_document(written) == model
    assert model.doc_id == case.doc["_id"]


def test_the_message_an_admin_reads() -> None:
    doc = variant(CREDENTIAL, hostnames=["a.example.com", "b.example.com", "a*.example.com"])
    with pytest.raises(ValidationError) as info:
        TlsCredential.from_doc(doc)
    assert str(info.value) == (
        'credential:web: hostnames[2] "a*.example.com": a wildcard must be the whole left-most label '
        '("*.example.com")'
    )
    assert (info.value.field, info.value.doc_id) == ("hostnames[2]", "credential:web")


def test_a_unicode_name_in_a_stored_document_gets_its_punycode_form_suggested() -> None:
    with pytest.raises(
        ValidationError, match=r'write "xn--bcher-kva.example", or add it with the certstore CLI'
    ):
        validate_document(variant(CREDENTIAL, hostnames=["Bücher.example"]))


def test_create_normalises_what_an_admin_types() -> None:
    credential = TlsCredential.create(
        "web",
        ["Bücher.example", "WWW.Example.COM.", "*.example.com"],
        servers=["web1"],
        challenge=ChallengeKind.DNS_01,
    )
    assert credential.hostnames == ["xn--bcher-kva.example", "www.example.com", "*.example.com"]
    assert credential.to_doc()["challenge"] == "dns-01"
    with pytest.raises(ValidationError, match=r'"Bücher\.example" and "xn--bcher-kva\.example" are the same'):
        TlsCredential.create("web", ["Bücher.example", "xn--bcher-kva.example"])
    with pytest.raises(ValidationError, match="must be 1-63 characters"):
        TlsCredential.create("Web", ["www.example.com"])


def test_from_doc_on_the_wrong_model_is_refused() -> None:
    with pytest.raises(ValidationError, match="is a tls_credential document, not a server"):
        Server.from_doc(CREDENTIAL)
    assert isinstance(TlsCredential.from_doc(CREDENTIAL), TlsCredential)


def test_unknown_fields_are_kept_and_couch_metadata_dropped() -> None:
    stored = variant(
        CREDENTIAL,
        _rev="2-abc",
        _attachments={"notes.txt": {"stub": True}},
        _revisions={"start": 2, "ids": ["abc", "def"]},
        _conflicts=["2-xyz"],
        added_by_a_newer_agent={"x": 1},
    )
    model = validate_document(stored)
    assert model.rev == "2-abc"
    assert model.extra == {"_attachments": {"notes.txt": {"stub": True}}, "added_by_a_newer_agent": {"x": 1}}
    written = model.to_doc()
    assert "_revisions" not in written and "_conflicts" not in written
    assert written["_rev"] == "2-abc" and written["added_by_a_newer_agent"] == {"x": 1}


def test_deleted_documents_have_no_model_but_may_be_written() -> None:
    tombstone = {"_id": "credential:web", "_rev": "2-a", "_deleted": True}
    with pytest.raises(ValidationError, match="deleted"):
        validate_document(tombstone)
    validate_write(tombstone)
    validate_write({"_id": "_design/other", "views": {}})  # code, left to CouchDB's admin check


def test_private_keys_are_refused_before_anything_else() -> None:
    doc = {"_id": "nonsense", "blob": ["-----BEGIN RSA PRIVATE KEY-----"]}
    with pytest.raises(PlaintextPrivateKey) as info:
        validate_document(doc)
    assert (info.value.field, info.value.doc_id) == ("blob[0]", "nonsense")
    assert "never be stored in the database unsealed" in str(info.value)


def test_models_built_in_python_validate() -> None:
    state = TlsCredentialState(
        name="web",
        status=Status.ISSUED,
        chain_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        not_before=T0,
        not_after=datetime(2026, 4, 1, tzinfo=UTC),
        serial="4a0b3c",
        fingerprint_sha256="ab" * 32,
        sealed_key=dict(SEALED),
        recipients=["web1"],
        handled_actions=HandledActions(renew=T0),
        error_history=[ErrorEntry(at=T0, message="rate limited")],
    )
    assert state.validated() == state
    assert state.to_doc()["not_before"] == "2026-01-01T00:00:00Z"
    deployment = Deployment(
        server="web1",
        credential="web",
        paths=["/var/lib/certstore/web/chain.pem"],
        hook_result=Outcome(ok=True, at=T0),
        live_check=Outcome(ok=False, at=T0, message="old serial"),
    )
    assert deployment.validated().doc_id == "deploy:web1:web"
    credential = TlsCredential(
        name="wild",
        hostnames=["*.example.com"],
        actions=Actions(revoke=RevokeAction(at=T0, reason=RevocationReason.SUPERSEDED)),
        key_type=KeyType.RSA_4096,
    )
    assert credential.validated().actions.revoke == RevokeAction(at=T0, reason=RevocationReason.SUPERSEDED)
    assert credential.keyfile_name == "wild"
    with pytest.raises(ValidationError, match=r"chain_pem is required when status is \"issued\""):
        TlsCredentialState(name="web", status=Status.ISSUED).validated()


def test_typed_values_read_from_documents() -> None:
    credential = TlsCredential.from_doc(CREDENTIAL_FULL)
    assert credential.key_type is KeyType.RSA_3072
    assert credential.keyfile_name == "example.com.kyr"
    assert credential.actions.rekey == datetime(2026, 3, 3, 0, 0, 0, 500000, tzinfo=UTC)
    assert credential.actions.revoke is not None
    assert credential.actions.revoke.reason.code == 1
    state = TlsCredentialState.from_doc(STATE)
    assert state.status is Status.ISSUED and state.not_after == datetime(2026, 4, 1, tzinfo=UTC)
    assert Server.from_doc(SERVER).heartbeat == datetime(2026, 2, 1, 8, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hostnames": ["a.example.com", 7]}, "hostnames[1] 7: must be a string"),
        ({"servers": ["web1", "web1"]}, 'servers[1] "web1": is listed twice (also servers[0])'),
        (
            {"actions": {"pause": "x"}},
            "actions.pause is not a known field here (allowed: rekey, renew, revoke)",
        ),
        ({"hostnames": []}, "hostnames must list 1 to 100 entries, not 0"),
        ({"keyfile": "../x"}, 'keyfile "../x": must be 1-64 characters'),
        (
            {"_private": 1},
            "_private is not allowed: top-level fields starting with _ are reserved by CouchDB",
        ),
    ],
)
def test_messages_name_the_field_and_value(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_document(variant(CREDENTIAL, **changes))
    assert str(info.value).startswith(f"credential:web: {message}")
