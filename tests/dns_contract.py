"""The contract every DNS-01 provider meets, as a mixin for its integration test against a real server.

A test class mixes in :class:`DnsProviderContract` and, in an autouse fixture, sets ``self.server``
(``host:port`` of the authoritative server, which answers queries). It implements :meth:`make_provider`
(a fresh provider serving :data:`ZONE`, with ``nameservers: [self.server]`` in its settings) and
:meth:`seed_txt` (publish a TXT value behind the provider's back, as another tool would). The checks go
through the real server: what a provider does is only done when the authoritative server shows it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest

from agent.dns import DnsProvider, TxtRecord, challenge_record
from agent.dns.propagation import query_txt, wait_for_txt
from agent.dns.rfc2136 import txt_rdata
from agent.errors import DnsZoneNotFound
from store.localservices import BindServer

ZONE = "example.com"
VISIBLE_WITHIN = 10.0


def new_value() -> str:
    """A fresh value shaped like a DNS-01 digest (43 characters of base64url)."""
    return secrets.token_urlsafe(32)


def tsig_add(bind: BindServer, fqdn: str, value: str) -> None:
    """Add a TXT value straight through dnspython (another tool's record, as far as the provider knows)."""
    keyring = dns.tsigkeyring.from_text({bind.tsig_key_name: (bind.tsig_algorithm, bind.tsig_secret)})
    update = dns.update.UpdateMessage(ZONE + ".", keyring=keyring, keyname=bind.tsig_key_name)
    update.add(fqdn + ".", 60, txt_rdata(value))
    response = dns.query.tcp(update, bind.host, port=bind.port, timeout=5)
    assert response.rcode() == dns.rcode.NOERROR


def wait_until(condition: Callable[[], bool], what: str, timeout: float = VISIBLE_WITHIN) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


class DnsProviderContract:
    """Tests every provider passes; see the module docstring for what a test class provides."""

    server: str

    def make_provider(self) -> DnsProvider:
        raise NotImplementedError

    def seed_txt(self, fqdn: str, value: str) -> None:
        raise NotImplementedError

    # --- helpers -------------------------------------------------------------------------------

    def values(self, fqdn: str) -> set[str]:
        return query_txt(self.server, fqdn)

    def wait_visible(self, provider: DnsProvider, records: list[TxtRecord]) -> None:
        # The provider's settings name the server (``nameservers``), as a dns: document does.
        assert provider.resolver_overrides == {ZONE: [self.server]}
        wait_for_txt(records, VISIBLE_WITHIN, resolver_overrides=provider.resolver_overrides, interval_s=0.05)

    def wait_values(self, fqdn: str, expected: set[str]) -> None:
        wait_until(lambda: self.values(fqdn) == expected, f"{fqdn} shows exactly {sorted(expected)}")

    # --- the contract --------------------------------------------------------------------------

    def test_added_value_is_visible_at_the_authoritative_server(self) -> None:
        record = challenge_record("www.example.com", new_value())
        provider = self.make_provider()
        provider.present([record])
        self.wait_visible(provider, [record])
        assert self.values(record.fqdn) == {record.value}
        assert provider.added == (record,)

    def test_wildcard_and_apex_keep_two_values_on_one_name(self) -> None:
        apex = challenge_record("example.com", new_value())
        wildcard = challenge_record("*.example.com", new_value())
        assert apex.fqdn == wildcard.fqdn == "_acme-challenge.example.com"
        provider = self.make_provider()
        provider.present([apex, wildcard])
        self.wait_visible(provider, [apex, wildcard])
        assert self.values(apex.fqdn) == {apex.value, wildcard.value}

    def test_cleanup_of_one_value_leaves_the_other(self) -> None:
        apex = challenge_record("example.com", new_value())
        wildcard = challenge_record("*.example.com", new_value())
        provider = self.make_provider()
        provider.present([apex, wildcard])
        self.wait_visible(provider, [apex, wildcard])
        provider.cleanup([apex])
        self.wait_values(apex.fqdn, {wildcard.value})
        assert provider.added == (wildcard,)
        provider.cleanup()
        self.wait_values(apex.fqdn, set())
        assert provider.added == ()

    def test_cleanup_removes_only_what_this_instance_added(self) -> None:
        fqdn = "_acme-challenge.shared.example.com"
        foreign = new_value()
        self.seed_txt(fqdn, foreign)
        self.wait_values(fqdn, {foreign})
        ours = TxtRecord(fqdn, new_value())
        provider = self.make_provider()
        provider.present([ours])
        self.wait_values(fqdn, {foreign, ours.value})
        provider.cleanup([TxtRecord(fqdn, foreign), ours])  # asks for the foreign one too: ignored
        self.wait_values(fqdn, {foreign})

    def test_another_instance_does_not_touch_our_values(self) -> None:
        first, second = self.make_provider(), self.make_provider()
        ours = challenge_record("app.example.com", new_value())
        theirs = challenge_record("*.app.example.com", new_value())
        first.present([ours])
        second.present([theirs])
        self.wait_visible(first, [ours, theirs])
        second.cleanup()
        self.wait_values(ours.fqdn, {ours.value})
        first.cleanup()
        self.wait_values(ours.fqdn, set())

    def test_a_name_outside_every_zone_changes_nothing(self) -> None:
        inside = challenge_record("mail.example.com", new_value())
        outside = challenge_record("www.example.org", new_value())
        provider = self.make_provider()
        with pytest.raises(DnsZoneNotFound) as caught:
            provider.present([inside, outside])
        assert caught.value.name == outside.fqdn
        assert "_acme-challenge.www.example.org" in str(caught.value)
        assert ZONE in str(caught.value)
        assert provider.added == ()
        assert self.values(inside.fqdn) == set()
