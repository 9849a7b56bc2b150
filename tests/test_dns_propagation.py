"""The propagation check's plumbing: which server must show what, NS discovery, the not-propagated error.

Queries against a real authoritative server are in tests/integration/test_dns_propagation_live.py.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import dns.name
import dns.resolver
import pytest

from agent.dns import TxtRecord, challenge_record
from agent.dns.propagation import authoritative_servers, servers_for, wait_for_txt
from agent.errors import DnsError, DnsNotPropagated


@dataclass
class Address:
    address: str


@dataclass
class Ns:
    target: str


class FakeResolver:
    """Answers NS/A/AAAA lookups from a table; a missing entry is NoAnswer."""

    def __init__(self, table: dict[tuple[str, str], list[Any]]) -> None:
        self.table = table

    def resolve(self, name: str, rdtype: Any) -> list[Any]:
        key = (str(name), dns.rdatatype.to_text(rdtype))
        if key not in self.table:
            raise dns.resolver.NoAnswer()
        return self.table[key]


def test_overrides_pick_the_longest_zone_and_group_by_server() -> None:
    a = challenge_record("www.example.com", "a")
    b = challenge_record("example.com", "b")
    c = challenge_record("x.sub.example.com", "c")
    overrides = {"Example.COM.": ["127.0.0.1:5301", "127.0.0.1:5302"], "sub.example.com": ["127.0.0.1:5303"]}
    assert servers_for([a, b, c], overrides) == {
        "127.0.0.1:5301": {a, b},
        "127.0.0.1:5302": {a, b},
        "127.0.0.1:5303": {c},
    }


def test_authoritative_servers_are_the_addresses_of_the_ns_targets() -> None:
    resolver = FakeResolver(
        {
            ("example.com.", "NS"): [Ns("ns1.example.net."), Ns("ns2.example.net.")],
            ("ns1.example.net.", "A"): [Address("192.0.2.1")],
            ("ns1.example.net.", "AAAA"): [Address("2001:db8::1")],
            ("ns2.example.net.", "A"): [Address("192.0.2.2")],
        }
    )
    assert authoritative_servers("example.com", resolver) == [  # type: ignore[arg-type]
        "192.0.2.1:53",
        "[2001:db8::1]:53",
        "192.0.2.2:53",
    ]


def test_no_ns_records_or_no_addresses_is_a_clear_error() -> None:
    with pytest.raises(DnsError, match=r"cannot find the authoritative servers of example\.com"):
        authoritative_servers("example.com", FakeResolver({}))  # type: ignore[arg-type]
    only_ns = FakeResolver({("example.com.", "NS"): [Ns("ns1.example.net.")]})
    with pytest.raises(DnsError, match="no address"):
        authoritative_servers("example.com", only_ns)  # type: ignore[arg-type]


def silent_udp_port() -> tuple[socket.socket, int]:
    """A bound UDP socket that never answers (queries to it time out)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def test_a_silent_server_fails_at_the_deadline_with_what_it_lacks() -> None:
    sock, port = silent_udp_port()
    server = f"127.0.0.1:{port}"
    records = [challenge_record("example.com", "one"), challenge_record("*.example.com", "two")]
    started = time.monotonic()
    with sock, pytest.raises(DnsNotPropagated) as caught:
        wait_for_txt(records, 0.3, resolver_overrides={"example.com": [server]}, interval_s=0.05)
    assert time.monotonic() - started < 2
    assert caught.value.lagging == {
        server: [("_acme-challenge.example.com", "one"), ("_acme-challenge.example.com", "two")]
    }
    assert f"{server} lacks" in str(caught.value) and "did not answer" in str(caught.value)


def test_an_empty_override_list_falls_back_to_the_ns_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns.resolver, "zone_for_name", lambda *a, **k: dns.name.from_text("example.com."))
    resolver = FakeResolver(
        {("example.com.", "NS"): [Ns("ns1.example.net.")], ("ns1.example.net.", "A"): [Address("192.0.2.1")]}
    )
    record = challenge_record("www.example.com", "v")
    assert servers_for([record], {"example.com": []}, resolver) == {"192.0.2.1:53": {record}}  # type: ignore[arg-type]


def test_nothing_to_wait_for_returns_at_once() -> None:
    wait_for_txt([], 0, resolver_overrides={})


def test_a_record_outside_the_overrides_is_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_zone(*args: Any, **kwargs: Any) -> None:
        raise dns.resolver.NoRootSOA()

    monkeypatch.setattr(dns.resolver, "zone_for_name", no_zone)
    with pytest.raises(DnsError, match=r"cannot find the zone of _acme-challenge\.example\.org"):
        wait_for_txt(
            [TxtRecord("_acme-challenge.example.org", "v")],
            1,
            resolver_overrides={"example.com": ["127.0.0.1:1"]},
        )
