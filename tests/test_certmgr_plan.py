"""The certmgr's decisions, one credential at a time, from documents in its mirror (no server, no CA)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.certmgr import Action, Certmgr, CertmgrSettings
from agent.renewal import MIN_RENEWAL_DELAY, RETRY_TABLE, renewal_time, retry_delay
from store import ids
from store.couch import CouchClient
from store.documents import AcmeAccount, Server, TlsCredential, TlsCredentialState
from store.hostkey import HostKey, generate_host_key
from store.names import KeyType, RevocationReason, Status

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def certmgr(tmp_path: Path) -> Certmgr:
    key = generate_host_key(tmp_path / "certmgr")
    db = CouchClient("http://127.0.0.1:9").db("certstore")  # never contacted by plan()
    manager = Certmgr(
        db, CertmgrSettings(name="certmgr", state_dir=tmp_path), clock=lambda: NOW, host_key=key
    )
    put(manager, Server(name="certmgr", public_key=key.public_key_b64, key_id=key.key_id, roles=["certmgr"]))
    web1 = generate_host_key(tmp_path / "web1")
    put(manager, Server(name="web1", public_key=web1.public_key_b64, key_id=web1.key_id))
    put(manager, AcmeAccount(name="pebble", directory_url="https://127.0.0.1:14000/dir", tos_agreed=True))
    return manager


def put(certmgr: Certmgr, model: Any) -> None:
    certmgr.mirror.apply(model.doc_id, model.validated().to_doc())


def request(**fields: Any) -> TlsCredential:
    fields.setdefault("servers", ["web1"])
    fields.setdefault("account", "pebble")
    credential = TlsCredential.create("site", ["www.example.com"], **fields)
    credential.rev = "1-a"
    return credential


def issued(**fields: Any) -> TlsCredentialState:
    values: dict[str, Any] = {
        "name": "site",
        "status": Status.ISSUED,
        "chain_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "not_before": NOW - timedelta(days=10),
        "not_after": NOW + timedelta(days=80),
        "serial": "0a1b",
        "fingerprint_sha256": "ab" * 32,
        "sealed_key": {"v": 1, "alg": "x", "ciphertext": "", "recipients": {}},
        "recipients": ["certmgr", "web1"],
        "hostnames": ["www.example.com"],
        "key_type": KeyType.ECDSA_P256,
        "account": "pebble",
        "next_renewal": NOW + timedelta(days=50),
        "request_rev": "1-a",
    }
    values.update(fields)
    return TlsCredentialState(**values)


def plan_for(certmgr: Certmgr, credential: TlsCredential, state: TlsCredentialState | None = None) -> Any:
    certmgr.mirror.apply(credential.doc_id, credential.to_doc())
    if state is not None:
        certmgr.mirror.apply(state.doc_id, state.to_doc())
    return certmgr.plan("site")


def test_a_new_request_is_issued(certmgr: Certmgr) -> None:
    assert plan_for(certmgr, request()).action is Action.ISSUE


def test_an_issued_certificate_waits_for_its_renewal_time(certmgr: Certmgr) -> None:
    plan = plan_for(certmgr, request(), issued())
    assert plan.action is Action.NONE
    assert plan.wake_at == NOW + timedelta(days=50)
    assert (
        plan_for(certmgr, request(), issued(next_renewal=NOW - timedelta(seconds=1))).action is Action.RENEW
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"servers": ["web9"]}, 'unknown server "web9"'),
        ({"account": "nobody"}, 'unknown account "nobody"'),
        ({"account": None}, "no ACME account"),
        ({"provider": "import"}, 'provider "import" is not handled'),
    ],
)
def test_bad_requests_fail_with_a_message(certmgr: Certmgr, fields: dict[str, Any], message: str) -> None:
    plan = plan_for(certmgr, request(**fields))
    assert plan.action is Action.FAIL
    assert message in plan.reason


def test_an_invalid_request_document_fails_with_the_model_message(certmgr: Certmgr) -> None:
    certmgr.mirror.apply(
        ids.credential_id("site"),
        {
            "_id": "credential:site",
            "type": "tls_credential",
            "hostnames": ["a*.example.com"],
        },
    )
    plan = certmgr.plan("site")
    assert plan.action is Action.FAIL
    assert "a*.example.com" in plan.reason


def test_a_recorded_failure_is_not_recorded_again(certmgr: Certmgr) -> None:
    failed = TlsCredentialState(
        name="site", status=Status.ERROR, status_message='unknown server "web9" in ...'
    )
    first = plan_for(certmgr, request(servers=["web9"]))
    failed.status_message = first.reason
    assert plan_for(certmgr, request(servers=["web9"]), failed).action is Action.NONE


def test_retries_wait_for_the_backoff_unless_the_request_changed(certmgr: Certmgr) -> None:
    failed = TlsCredentialState(
        name="site",
        status=Status.ERROR,
        failures=1,
        next_attempt=NOW + timedelta(minutes=1),
        request_rev="1-a",
    )
    plan = plan_for(certmgr, request(), failed)
    assert plan.action is Action.NONE and plan.wake_at == NOW + timedelta(minutes=1)
    changed = request()
    changed.rev = "2-b"
    assert plan_for(certmgr, changed, failed).action is Action.ISSUE


def test_actions_are_carried_out_once(certmgr: Certmgr) -> None:
    asked = request()
    asked.actions.renew = NOW - timedelta(minutes=1)
    assert plan_for(certmgr, asked, issued()).action is Action.RENEW
    done = issued()
    done.handled_actions.renew = asked.actions.renew
    assert plan_for(certmgr, asked, done).action is Action.NONE
    asked.actions.rekey = NOW
    assert plan_for(certmgr, asked, done).action is Action.REKEY


def test_revoke_then_nothing_until_a_rekey(certmgr: Certmgr) -> None:
    from store.documents import RevokeAction

    asked = request()
    asked.actions.revoke = RevokeAction(at=NOW, reason=RevocationReason.KEY_COMPROMISE)
    assert plan_for(certmgr, asked, issued()).action is Action.REVOKE
    revoked = issued(status=Status.REVOKED)
    revoked.handled_actions.revoke = NOW
    assert plan_for(certmgr, asked, revoked).action is Action.NONE
    asked.actions.rekey = NOW + timedelta(seconds=1)
    assert plan_for(certmgr, asked, revoked).action is Action.REKEY


def test_changed_names_or_key_type_reissue_and_access_changes_reseal(
    certmgr: Certmgr, tmp_path: Path
) -> None:
    assert plan_for(certmgr, request(key_type="rsa-2048"), issued()).action is Action.ISSUE
    renamed = TlsCredential.create(
        "site", ["www.example.com", "api.example.com"], servers=["web1"], account="pebble"
    )
    assert plan_for(certmgr, renamed, issued()).action is Action.ISSUE
    web2: HostKey = generate_host_key(tmp_path / "web2")
    put(certmgr, Server(name="web2", public_key=web2.public_key_b64, key_id=web2.key_id))
    assert plan_for(certmgr, request(servers=["web1", "web2"]), issued()).action is Action.RESEAL
    assert plan_for(certmgr, request(), issued(rekey_reason="server web2 lost access")).action is Action.REKEY


def test_renewal_policy() -> None:
    start, end = NOW, NOW + timedelta(days=90)
    at_two_thirds = renewal_time(start, end, now=NOW, rng=lambda: 0.0)
    assert at_two_thirds == NOW + timedelta(days=60)
    assert NOW + timedelta(days=60) < renewal_time(start, end, now=NOW, rng=lambda: 1.0) < end
    window = (NOW + timedelta(days=5), NOW + timedelta(days=6))
    assert renewal_time(start, end, now=NOW, ari_window=window, rng=lambda: 0.5) == NOW + timedelta(
        days=5, hours=12
    )
    # A clock ahead of the CA never schedules a renewal in the past.
    assert renewal_time(start, end, now=end, rng=lambda: 0.0) == end + MIN_RENEWAL_DELAY


def test_retry_table_and_retry_after() -> None:
    assert retry_delay(1, now=NOW) == RETRY_TABLE[0]
    assert retry_delay(99, now=NOW) == RETRY_TABLE[-1]
    assert retry_delay(1, NOW + timedelta(hours=30), now=NOW) == timedelta(hours=30)
    assert retry_delay(3, NOW + timedelta(seconds=5), now=NOW) == RETRY_TABLE[2]


def test_a_dns_provider_the_certmgr_cannot_open_fails_only_its_names(
    certmgr: Certmgr, tmp_path: Path
) -> None:
    from agent.dns import TxtRecord
    from agent.errors import DnsError
    from store.documents import DnsProvider
    from store.sealing import seal

    stranger = generate_host_key(tmp_path / "stranger")
    sealed = dict(seal(b'{"tsig_secret": "c2VjcmV0"}', [stranger.public_key]))
    put(
        certmgr,
        DnsProvider(
            name="ns1",
            kind="rfc2136",
            zones=["example.org"],
            options={"server": "127.0.0.1:53", "tsig_key_name": "k."},
            sealed_credentials=sealed,
        ),
    )
    (provider,) = certmgr._dns_providers()
    with pytest.raises(DnsError) as info:
        provider.present([TxtRecord("_acme-challenge.example.org", "x" * 43)])
    assert "dns:ns1 cannot be used" in str(info.value)
    assert "c2VjcmV0" not in str(info.value)


def test_an_expired_certificate_whose_renewal_failed_is_expired_and_retried(certmgr: Certmgr) -> None:
    from agent.certmgr import Plan

    late = issued(
        not_after=NOW - timedelta(hours=1),
        not_before=NOW - timedelta(days=90),
        next_renewal=NOW - timedelta(days=30),
    )
    assert plan_for(certmgr, request(), late).action is Action.RENEW
    certmgr._write_state = lambda state: None  # type: ignore[method-assign]  # no database here
    certmgr._record_failure("site", late, request(), "the CA is down")
    assert late.status is Status.EXPIRED and late.next_attempt == NOW + RETRY_TABLE[0]
    waiting = plan_for(certmgr, request(), late)
    assert waiting == Plan(Action.NONE, "waiting to retry (renewal is due)", wake_at=NOW + RETRY_TABLE[0])
