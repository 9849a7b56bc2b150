"""DNS-01 end to end: pebble validates a wildcard and its apex (two TXT values on one name) through BIND."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from dns_contract import ZONE

from agent.dns import DnsProvider, TxtRecord, provider_for
from agent.dns.propagation import query_txt, wait_for_txt
from agent.issuer import AcmeIssuer, PendingChallenge, generate_account_key, load_account_key
from agent.keys import build_csr, generate_private_key
from store.localservices import BindServer, Pebble

pytestmark = pytest.mark.integration


class DnsOnlySolver:
    """The smallest ChallengeSolver over a DNS provider: present, wait for propagation, clean up."""

    def __init__(self, provider: DnsProvider) -> None:
        self.provider = provider
        self.seen_values: set[str] = set()

    def choose(self, identifier: str, wildcard: bool, offered: Sequence[str]) -> str:
        return "dns-01"

    def present(self, items: Sequence[PendingChallenge]) -> None:
        records = [TxtRecord(item.validation_domain, item.validation) for item in items]
        self.provider.present(records)
        wait_for_txt(records, 10, resolver_overrides=self.provider.resolver_overrides, interval_s=0.05)
        for server in self.provider.nameservers:
            self.seen_values |= query_txt(server, "_acme-challenge." + ZONE)

    def cleanup(self, items: Sequence[PendingChallenge]) -> None:
        self.provider.cleanup()


def test_pebble_validates_wildcard_and_apex_over_rfc2136(
    bind_server: Callable[..., BindServer], pebble_factory: Callable[..., Pebble]
) -> None:
    bind = bind_server([ZONE])
    pebble = pebble_factory(dns_server=bind.address)
    config = {
        "zones": [ZONE],
        "server": bind.address,
        "tsig_key_name": bind.tsig_key_name,
        "nameservers": [bind.address],
    }
    solver = DnsOnlySolver(provider_for("rfc2136", config, {"tsig_secret": bind.tsig_secret}))
    issuer = AcmeIssuer(
        pebble.directory_url, load_account_key(generate_account_key()), ca_bundle=pebble.ca_file
    )
    issuer.register("admin@example.com", agree_tos=True)
    names = [ZONE, f"*.{ZONE}"]
    issued = issuer.issue(build_csr(generate_private_key("ecdsa-p256"), names), names, solver, deadline_s=30)
    assert sorted(issued.info.names) == sorted(names)
    # A fresh account has no authorization to reuse: both values were on the name at once.
    assert len(solver.seen_values) == 2
    assert solver.provider.added == ()
    assert query_txt(bind.address, "_acme-challenge." + ZONE) == set()
