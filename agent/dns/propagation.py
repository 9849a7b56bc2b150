"""Wait until every authoritative server of a zone shows every DNS-01 TXT value, before the CA is asked.

The CA looks the value up through its own resolver, which asks one of the zone's authoritative servers;
a secondary that has not yet received the change would fail the challenge. So we ask each authoritative
server directly (UDP, TCP when the answer is truncated), not a recursive resolver (whose cache would
answer with what it saw before).

The servers are the addresses of the zone's NS records, found through the system resolver, or, for a
zone listed in ``resolver_overrides``, the ``host:port`` list given there (a ``dns:`` document's
``nameservers``; tests use it for a server on a loopback port).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from agent.dns.base import TxtRecord, canonical_name, ip_address, parse_endpoint, zone_for
from agent.errors import DnsError, DnsNotPropagated

DEFAULT_INTERVAL = 1.0
QUERY_TIMEOUT = 2.0
DNS_PORT = 53


def query_txt(server: str, fqdn: str, *, timeout: float = QUERY_TIMEOUT) -> set[str]:
    """The TXT values ``server`` (``host:port``) holds for ``fqdn``; empty on NXDOMAIN.

    Raises DnsError when the server does not answer or answers with an error.
    """
    host, port = parse_endpoint(server, default_port=DNS_PORT)
    query = dns.message.make_query(fqdn + ".", dns.rdatatype.TXT)
    try:
        address = ip_address(host, port)
        response, _ = dns.query.udp_with_fallback(query, address, port=port, timeout=timeout)
    except dns.exception.Timeout as exc:
        raise DnsError(f"{server} did not answer within {timeout:g} s") from exc
    except (OSError, dns.exception.DNSException) as exc:
        raise DnsError(f"{server}: {exc}") from exc
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return set()
    if rcode != dns.rcode.NOERROR:
        raise DnsError(f"{server} answered {dns.rcode.to_text(rcode)}")
    name = dns.name.from_text(fqdn)
    values: set[str] = set()
    for rrset in response.answer:
        if rrset.name == name and rrset.rdtype == dns.rdatatype.TXT:
            # A TXT value longer than 255 bytes arrives as several strings: they join into one value.
            values.update(b"".join(rdata.strings).decode("ascii", "replace") for rdata in rrset)
    return values


def _endpoint(address: str, port: int = DNS_PORT) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def authoritative_servers(zone: str, resolver: dns.resolver.Resolver | None = None) -> list[str]:
    """``address:53`` of every name server in the NS records of ``zone`` (IPv4 and IPv6)."""
    resolver = resolver or dns.resolver.get_default_resolver()
    servers: list[str] = []
    try:
        targets = [str(ns.target) for ns in resolver.resolve(zone + ".", dns.rdatatype.NS)]
        for target in targets:
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                try:
                    answer = resolver.resolve(target, rdtype)
                except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                    continue
                servers += [_endpoint(rdata.address) for rdata in answer]
    except dns.exception.DNSException as exc:
        raise DnsError(f"cannot find the authoritative servers of {zone}: {exc}") from exc
    if not servers:
        raise DnsError(f"cannot find the authoritative servers of {zone}: its name servers have no address")
    return servers


def servers_for(
    records: Sequence[TxtRecord],
    resolver_overrides: Mapping[str, Sequence[str]] | None = None,
    resolver: dns.resolver.Resolver | None = None,
) -> dict[str, set[TxtRecord]]:
    """Which server must show which records: ``{host:port: records}``."""
    # An empty list overrides nothing (it would make every record count as propagated).
    overrides = {
        canonical_name(zone): list(servers) for zone, servers in (resolver_overrides or {}).items() if servers
    }
    looked_up: dict[str, list[str]] = {}  # zone -> servers, each zone looked up once
    wanted: dict[str, set[TxtRecord]] = {}
    for record in records:
        zone = zone_for(record.fqdn, overrides)
        if zone is not None:
            servers = overrides[zone]
        else:
            zone = canonical_name(dns.resolver.zone_for_name(record.fqdn + ".", resolver=resolver).to_text())
            if zone not in looked_up:
                looked_up[zone] = authoritative_servers(zone, resolver)
            servers = looked_up[zone]
        for server in servers:
            wanted.setdefault(server, set()).add(record)
    return wanted


def wait_for_txt(
    records: Sequence[TxtRecord],
    deadline_s: float,
    *,
    resolver_overrides: Mapping[str, Sequence[str]] | None = None,
    interval_s: float = DEFAULT_INTERVAL,
    resolver: dns.resolver.Resolver | None = None,
) -> None:
    """Return once every authoritative server shows every record; wait at most ``deadline_s`` seconds.

    ``resolver_overrides`` maps a zone to the ``host:port`` of its authoritative servers (longest zone
    wins), replacing the NS lookup; ``resolver`` is the resolver for that lookup (default: the system's).
    Raises :class:`DnsNotPropagated` naming each lagging server and the values it lacks (and the last
    error it gave, if any), or DnsError when the servers themselves cannot be found.
    """
    end = time.monotonic() + deadline_s
    try:
        pending = servers_for(records, resolver_overrides, resolver)
    except dns.exception.DNSException as exc:
        raise DnsError(f"cannot find the zone of {', '.join(r.fqdn for r in records)}: {exc}") from exc
    errors: dict[str, str] = {}
    while True:
        for server in list(pending):
            errors.pop(server, None)
            for fqdn in sorted({record.fqdn for record in pending[server]}):
                timeout = max(0.1, min(QUERY_TIMEOUT, end - time.monotonic()))
                try:
                    visible = query_txt(server, fqdn, timeout=timeout)
                except DnsError as exc:
                    errors[server] = str(exc)
                    continue
                pending[server] = {r for r in pending[server] if r.fqdn != fqdn or r.value not in visible}
            if not pending[server]:
                del pending[server]
        if not pending:
            return
        left = end - time.monotonic()
        if left <= 0:
            raise _not_propagated(pending, errors, deadline_s)
        time.sleep(min(interval_s, left))


def _not_propagated(
    pending: Mapping[str, set[TxtRecord]], errors: Mapping[str, str], deadline_s: float
) -> DnsNotPropagated:
    lagging = {
        server: sorted((record.fqdn, record.value) for record in missing)
        for server, missing in pending.items()
    }
    parts = []
    for server, missing in lagging.items():
        shown = ", ".join(f"{fqdn} {value!r}" for fqdn, value in missing)
        error = f" (last error: {errors[server]})" if server in errors else ""
        parts.append(f"{server} lacks {shown}{error}")
    return DnsNotPropagated(
        f"DNS-01 TXT values not visible at every authoritative server after {deadline_s:g} s: "
        + "; ".join(parts),
        lagging,
    )
