"""The certmgr over a credential's life: key types, renewal on an injected clock, actions, EAB, DNS-01."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from certmgr_fleet import FakeClock, Fleet, add_host, make_fleet, running_certmgr
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.admin import add_account, add_credential, add_dns_provider, request_action, request_rollover
from agent.keys import key_matches_certificate, load_certificate, split_chain, verify_chain
from agent.responder import Responder
from store.documents import AcmeAccountState, TlsCredentialState
from store.errors import NotARecipient
from store.follower import wait_for
from store.localservices import free_port
from store.names import Status
from store.sealing import open_private_key_pem

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(couch_servers: Any, db_name: str, tmp_path: Path, pebble: Any) -> Iterator[Fleet]:
    hub_server, replica_server = couch_servers(2)
    made = make_fleet(hub_server, db_name, tmp_path)
    made.single_host(replica_server, replica_server.db_name(db_name + "-web1"), tmp_path, pebble.http_port)
    yield made
    made.close()


def leaf(state: TlsCredentialState) -> x509.Certificate:
    assert state.chain_pem is not None
    return load_certificate(split_chain(state.chain_pem.encode())[0])


def key_of(fleet: Fleet, state: TlsCredentialState) -> bytes:
    assert state.sealed_key is not None
    return open_private_key_pem(state.sealed_key, fleet.hosts["web1"].key)


def is_revoked(pebble: Any, serial_hex: str) -> bool:
    url = f"{pebble.management_url}/cert-status-by-serial/{serial_hex}"
    reply = httpx.get(url, verify=pebble.ssl_context())
    return reply.status_code == 200 and reply.json().get("Status") == "Revoked"


@pytest.mark.parametrize(
    ("key_type", "check"),
    [
        ("ecdsa-p384", lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp384r1"),
        ("rsa-2048", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
    ],
)
def test_key_types(fleet: Fleet, pebble: Any, key_type: str, check: Any) -> None:
    add_account(fleet.hub, "pebble", pebble.directory_url, agree_tos=True)
    add_credential(
        fleet.hub, "typed", ["typed.example.com"], servers=["web1"], account="pebble", key_type=key_type
    )
    with running_certmgr(fleet, str(pebble.ca_file)):
        state = fleet.wait_status("typed", Status.ISSUED, Status.ERROR)
    assert state.status is Status.ISSUED, state.status_message
    assert check(leaf(state).public_key())
    assert key_matches_certificate(key_of(fleet, state), split_chain((state.chain_pem or "").encode())[0])


def test_renewal_on_an_injected_clock_and_the_three_actions(fleet: Fleet, pebble: Any) -> None:
    clock = FakeClock()
    add_account(fleet.hub, "pebble", pebble.directory_url, agree_tos=True)
    add_credential(fleet.hub, "site", ["site.example.com"], servers=["web1"], account="pebble")
    with running_certmgr(fleet, str(pebble.ca_file), clock=clock) as certmgr:
        first = fleet.wait_status("site", Status.ISSUED)
        assert first.next_renewal is not None
        first_key = key_of(fleet, first)

        # Nothing happens before the renewal time...
        certmgr.mark_all()
        clock.advance_to(first.next_renewal - timedelta(seconds=1))
        certmgr.mark_all()
        # ...and a renewal (same key, new serial) once it has passed.
        later = first.next_renewal + timedelta(seconds=1)
        fleet.heartbeat(later)  # the agents are alive then too
        assert wait_until(lambda: certmgr.mirror_heartbeat("web1") == later)
        clock.advance_to(later)
        certmgr.mark_all()
        renewed = wait_serial_change(fleet, "site", first.serial)
        assert renewed.status is Status.ISSUED
        assert key_of(fleet, renewed) == first_key, "a renewal keeps the key"
        assert renewed.next_renewal is not None and renewed.next_renewal > clock()

        # renew action: handled once.
        request_action(fleet.hub, "site", "renew", at=clock())
        asked = wait_serial_change(fleet, "site", renewed.serial)
        assert asked.handled_actions.renew is not None
        certmgr.mark_all()

        # rekey action: a new key, and the old certificate revoked.
        request_action(fleet.hub, "site", "rekey", at=clock())
        rekeyed = wait_serial_change(fleet, "site", asked.serial)
        assert key_of(fleet, rekeyed) != first_key
        assert wait_until(lambda: is_revoked(pebble, asked.serial or ""))

        # revoke action with a reason.
        request_action(fleet.hub, "site", "revoke", reason="superseded", at=clock())
        revoked = fleet.wait_status("site", Status.REVOKED)
        assert is_revoked(pebble, revoked.serial or "")
        assert "superseded" in (revoked.status_message or "")
    assert certmgr.orders == 4, f"expected exactly 4 orders, the certmgr placed {certmgr.orders}"


def wait_serial_change(fleet: Fleet, name: str, old_serial: str | None) -> TlsCredentialState:
    def changed() -> bool:
        state = fleet.state(name)
        return state is not None and state.status is Status.ISSUED and state.serial != old_serial

    assert wait_until(changed), f"{name}: the serial never changed from {old_serial} ({fleet.state(name)})"
    state = fleet.state(name)
    assert state is not None
    return state


def wait_until(condition: Any, timeout: float = 60.0) -> bool:
    return wait_for(condition, timeout, interval=0.1)


def test_eab_account_against_pebble_requiring_it(fleet: Fleet, pebble_factory: Any) -> None:
    hmac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    strict = pebble_factory(eab_keys={"kid-1": hmac_key}, http_port=None)
    # web1's responder listens on the session pebble's HTTP port; this pebble has its own: answer there.
    host = fleet.hosts["web1"]
    assert host.responder is not None
    extra = Responder(host.responder.challenges, "127.0.0.1", strict.http_port)
    extra.start()
    fleet.stops.append(extra.stop)
    add_account(fleet.hub, "no-eab", strict.directory_url, agree_tos=True)
    add_account(fleet.hub, "eab", strict.directory_url, agree_tos=True, eab_kid="kid-1", eab_hmac=hmac_key)
    add_credential(fleet.hub, "without", ["without.example.com"], servers=["web1"], account="no-eab")
    add_credential(fleet.hub, "with", ["with.example.com"], servers=["web1"], account="eab")
    with running_certmgr(fleet, str(strict.ca_file)):
        refused = fleet.wait_status("without", Status.ERROR)
        issued = fleet.wait_status("with", Status.ISSUED, Status.ERROR)
    assert "External Account Binding" in (refused.status_message or "")
    assert issued.status is Status.ISSUED, issued.status_message
    verify_chain(split_chain((issued.chain_pem or "").encode()), strict.root_pem().encode())
    assert hmac_key not in str(fleet.hub.get("account:eab"))


def test_wildcard_and_apex_over_dns01_with_rfc2136_and_tsig(
    fleet: Fleet, pebble_factory: Any, bind_server: Any
) -> None:
    bind = bind_server(["example.org"])
    ca = pebble_factory(dns_server=bind.address)
    add_account(fleet.hub, "pebble", ca.directory_url, agree_tos=True)
    add_dns_provider(
        fleet.hub,
        "bind",
        "rfc2136",
        ["example.org"],
        options={"server": bind.address, "tsig_key_name": bind.tsig_key_name, "nameservers": [bind.address]},
        secrets={"tsig_secret": bind.tsig_secret},
    )
    add_credential(fleet.hub, "wild", ["*.example.org", "example.org"], servers=["web1"], account="pebble")
    add_credential(fleet.hub, "nodns", ["*.example.net"], servers=["web1"], account="pebble")
    with running_certmgr(fleet, str(ca.ca_file)):
        wild = fleet.wait_status("wild", Status.ISSUED, Status.ERROR)
        nodns = fleet.wait_status("nodns", Status.ERROR)
    assert wild.status is Status.ISSUED, wild.status_message
    names = leaf(wild).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == ["*.example.org", "example.org"]
    assert "wildcard" in (nodns.status_message or "") and "dns-01" in (nodns.status_message or "")
    assert bind.tsig_secret not in str(fleet.hub.get("dns:bind"))


def test_acme_failures_end_as_statuses_and_the_loop_goes_on(
    fleet: Fleet, pebble: Any, a_records: Any
) -> None:
    add_account(fleet.hub, "pebble", pebble.directory_url, agree_tos=True)
    add_account(fleet.hub, "down", f"https://127.0.0.1:{free_port()}/dir", agree_tos=True)
    # The fleet serves the token, but the name points at 127.0.0.9 where nobody answers: the CA fails.
    a_records("nobody.example.com", ["127.0.0.9"])
    add_credential(fleet.hub, "refused", ["nobody.example.com"], servers=["web1"], account="pebble")
    add_credential(fleet.hub, "offline-ca", ["ca.example.com"], servers=["web1"], account="down")
    add_credential(fleet.hub, "fine", ["fine.example.com"], servers=["web1"], account="pebble")
    with running_certmgr(fleet, str(pebble.ca_file)):
        refused = fleet.wait_status("refused", Status.ERROR)
        offline = fleet.wait_status("offline-ca", Status.ERROR)
        fine = fleet.wait_status("fine", Status.ISSUED, Status.ERROR)
    assert "could not validate nobody.example.com" in (refused.status_message or "")
    assert "127.0.0.9" in (refused.status_message or "")
    assert "cannot reach the ACME CA" in (offline.status_message or "")
    assert refused.next_attempt is not None and refused.failures == 1
    assert fine.status is Status.ISSUED, fine.status_message


def test_account_key_rollover_as_an_action(fleet: Fleet, pebble: Any) -> None:
    add_account(fleet.hub, "pebble", pebble.directory_url, agree_tos=True)
    add_credential(fleet.hub, "before", ["before.example.com"], servers=["web1"], account="pebble")
    with running_certmgr(fleet, str(pebble.ca_file)):
        fleet.wait_status("before", Status.ISSUED)
        old = AcmeAccountState.from_doc(fleet.hub.get("account:pebble:state"))
        request_rollover(fleet.hub, "pebble")
        assert wait_until(
            lambda: AcmeAccountState.from_doc(fleet.hub.get("account:pebble:state")).rolled_over is not None
        ), AcmeAccountState.from_doc(fleet.hub.get("account:pebble:state")).status_message
        new = AcmeAccountState.from_doc(fleet.hub.get("account:pebble:state"))
        # Orders keep working with the new key.
        add_credential(fleet.hub, "after", ["after.example.com"], servers=["web1"], account="pebble")
        after = fleet.wait_status("after", Status.ISSUED, Status.ERROR)
    assert after.status is Status.ISSUED, after.status_message
    assert new.sealed_key != old.sealed_key and new.sealed_next_key is None
    assert new.account_url == old.account_url


def test_adding_a_server_reseals_and_removing_one_rekeys(
    fleet: Fleet, pebble: Any, couch_servers: Any, db_name: str, tmp_path: Path
) -> None:
    _hub, replica_server = couch_servers(2)
    web2 = add_host(fleet, "web2", replica_server, replica_server.db_name(db_name + "-web2"), tmp_path)
    add_account(fleet.hub, "pebble", pebble.directory_url, agree_tos=True)
    add_credential(fleet.hub, "site", ["site.example.com"], servers=["web1"], account="pebble")
    with running_certmgr(fleet, str(pebble.ca_file)):
        first = fleet.wait_status("site", Status.ISSUED)
        add_credential(
            fleet.hub, "site", ["site.example.com"], servers=["web1", "web2"], account="pebble", replace=True
        )
        assert wait_until(lambda: "web2" in (fleet.state("site") or first).recipients)
        widened = fleet.state("site")
        assert widened is not None and widened.serial == first.serial, "adding a server must not re-issue"
        assert open_private_key_pem(widened.sealed_key or {}, web2.key) == key_of(fleet, first)

        add_credential(
            fleet.hub, "site", ["site.example.com"], servers=["web2"], account="pebble", replace=True
        )
        rekeyed = wait_serial_change(fleet, "site", first.serial)
        assert wait_until(lambda: is_revoked(pebble, first.serial or ""))
    assert rekeyed.recipients == ["certmgr", "web2"]
    assert rekeyed.rekey_reason is None
    with pytest.raises(NotARecipient):
        open_private_key_pem(rekeyed.sealed_key or {}, fleet.hosts["web1"].key)
    new_key = open_private_key_pem(rekeyed.sealed_key or {}, web2.key)
    assert new_key != key_of(fleet, first)
