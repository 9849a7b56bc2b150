"""The propagation check against real BIND9 servers: lagging servers, polling, TCP fallback, NS discovery."""

from __future__ import annotations

import threading
from collections.abc import Callable

import dns.resolver
import pytest
from dns_contract import ZONE, new_value, tsig_add

from agent.dns import TxtRecord, challenge_record
from agent.dns.propagation import authoritative_servers, query_txt, servers_for, wait_for_txt
from agent.errors import DnsNotPropagated
from store.localservices import BindServer

pytestmark = pytest.mark.integration


@pytest.fixture
def two_servers(bind_server: Callable[..., BindServer]) -> tuple[BindServer, BindServer]:
    """Two authoritative servers for the same zone (as a primary and a secondary that has not caught up)."""
    return bind_server([ZONE]), bind_server([ZONE])


def test_a_lagging_server_is_named_with_what_it_lacks(two_servers: tuple[BindServer, BindServer]) -> None:
    first, second = two_servers
    apex, wildcard = (
        challenge_record("example.com", new_value()),
        challenge_record("*.example.com", new_value()),
    )
    for record in (apex, wildcard):
        tsig_add(first, record.fqdn, record.value)
    tsig_add(second, apex.fqdn, apex.value)
    overrides = {ZONE: [first.address, second.address]}
    with pytest.raises(DnsNotPropagated) as caught:
        wait_for_txt([apex, wildcard], 0.5, resolver_overrides=overrides, interval_s=0.05)
    assert caught.value.lagging == {second.address: [(wildcard.fqdn, wildcard.value)]}
    message = str(caught.value)
    assert second.address in message and wildcard.value in message
    assert first.address not in message and apex.value not in message


def test_waits_until_the_last_server_catches_up(two_servers: tuple[BindServer, BindServer]) -> None:
    first, second = two_servers
    record = challenge_record("www.example.com", new_value())
    tsig_add(first, record.fqdn, record.value)
    late = threading.Timer(0.3, tsig_add, (second, record.fqdn, record.value))
    late.start()
    try:
        wait_for_txt(
            [record], 10, resolver_overrides={ZONE: [first.address, second.address]}, interval_s=0.05
        )
    finally:
        late.join()
    assert query_txt(second.address, record.fqdn) == {record.value}


def test_a_large_rrset_is_read_over_tcp(bind_server: Callable[..., BindServer]) -> None:
    bind = bind_server([ZONE])
    fqdn = "_acme-challenge.big.example.com"
    values = {f"{index:02d}" + "x" * 200 for index in range(12)}  # ~2.4 kB: truncated over UDP
    for value in values:
        tsig_add(bind, fqdn, value)
    assert query_txt(bind.address, fqdn) == values
    wait_for_txt([TxtRecord(fqdn, value) for value in values], 5, resolver_overrides={ZONE: [bind.address]})


def test_unknown_name_reads_as_empty(bind_server: Callable[..., BindServer]) -> None:
    bind = bind_server([ZONE])
    assert query_txt(bind.address, "_acme-challenge.nothing.example.com") == set()


def test_servers_are_found_through_the_zone_ns_records(bind_server: Callable[..., BindServer]) -> None:
    bind = bind_server([ZONE])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [bind.host]
    resolver.port = bind.port
    # The fixture's zone has "NS ns1.example.com." with "ns1 A 127.0.0.1".
    assert authoritative_servers(ZONE, resolver) == ["127.0.0.1:53"]
    record = challenge_record("deep.www.example.com", new_value())
    assert servers_for([record], resolver=resolver) == {"127.0.0.1:53": {record}}
