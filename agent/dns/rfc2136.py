"""DNS-01 through RFC 2136 dynamic updates, signed with TSIG, sent over TCP to the zone's primary server.

Settings of the ``dns:`` document (besides ``zones``, ``ttl``, ``nameservers``): ``server`` (``host``,
``host:port`` or ``[v6]:port``; port 53 by default), ``tsig_key_name``, ``tsig_algorithm`` (default
``hmac-sha256``) and ``timeout`` (seconds, default 10). Credential: ``tsig_secret`` (base64).

Each change is one UPDATE message: an add is ``update.add(name, ttl, TXT value)`` (RFC 2136 adds the value
to the RRset), a delete is ``update.delete(name, TXT value)`` (removes that value only).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from typing import Any, Self

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.tsigkeyring
import dns.update

from agent.dns.base import DEFAULT_TTL, DnsProvider, config_number, config_str, ip_address, parse_endpoint
from agent.errors import ConfigError, DnsUpdateError

DEFAULT_PORT = 53
DEFAULT_TIMEOUT = 10.0
DEFAULT_ALGORITHM = "hmac-sha256"
# MD5 and SHA-1 are deliberately absent.
ALGORITHMS = ("hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")
_REFUSED_ADVICE = "the server refused the update: check the TSIG key name/secret and the zone's allow-update"
# TSIG errors the server reports (dnspython raises them while reading the reply).
_PEER_ERRORS: dict[type[dns.tsig.PeerError], str] = {
    dns.tsig.PeerBadKey: "BADKEY",
    dns.tsig.PeerBadSignature: "BADSIG",
    dns.tsig.PeerBadTime: "BADTIME",
    dns.tsig.PeerBadTruncation: "BADTRUNC",
}


def txt_rdata(value: str) -> dns.rdtypes.ANY.TXT.TXT:
    """``value`` as one TXT character-string (built directly, so quotes and spaces need no escaping)."""
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode("ascii")])


class Rfc2136Provider(DnsProvider):
    """Adds and deletes TXT values with TSIG-signed dynamic updates (BIND, Knot, PowerDNS, Windows DNS)."""

    kind = "rfc2136"

    def __init__(
        self,
        zones: Sequence[str],
        *,
        server: str,
        tsig_key_name: str,
        tsig_secret: str,
        tsig_algorithm: str = DEFAULT_ALGORITHM,
        timeout: float = DEFAULT_TIMEOUT,
        ttl: int = DEFAULT_TTL,
        nameservers: Sequence[str] = (),
    ) -> None:
        super().__init__(zones, ttl=ttl, nameservers=nameservers, secrets=(tsig_secret,))
        self.host, self.port = parse_endpoint(server, default_port=DEFAULT_PORT)
        if tsig_algorithm not in ALGORITHMS:
            raise ConfigError(
                f"tsig_algorithm {tsig_algorithm!r} is not one of {', '.join(ALGORITHMS)}",
                field="tsig_algorithm",
            )
        try:
            self.key_name = dns.name.from_text(tsig_key_name)
        except dns.exception.DNSException as exc:
            raise ConfigError(
                f"tsig_key_name {tsig_key_name!r} is not a DNS name: {exc}", field="tsig_key_name"
            ) from exc
        self.algorithm = dns.name.from_text(tsig_algorithm)
        try:
            self._keyring = dns.tsigkeyring.from_text({tsig_key_name: (tsig_algorithm, tsig_secret)})
        except (binascii.Error, ValueError):
            # Never echo the secret, not even a bad one (and do not chain the error that may quote it).
            raise ConfigError("tsig_secret is not valid base64", field="tsig_secret") from None
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Self:
        """Settings ``server``, ``tsig_key_name``, ``tsig_algorithm``, ``timeout``; secret ``tsig_secret``."""
        return cls(
            server=config_str(config, "server"),
            tsig_key_name=config_str(config, "tsig_key_name"),
            tsig_algorithm=config_str(config, "tsig_algorithm", default=DEFAULT_ALGORITHM),
            timeout=config_number(config, "timeout", default=DEFAULT_TIMEOUT, low=0.1, high=300),
            tsig_secret=config_str(secrets, "tsig_secret"),
            **cls.base_options(config),
        )

    @property
    def server(self) -> str:
        """The primary server as ``host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _add_txt(self, zone: str, fqdn: str, value: str) -> None:
        update = self._update(zone)
        update.add(dns.name.from_text(fqdn), self.ttl, txt_rdata(value))
        self._send(update, f"adding a TXT value to {fqdn}")

    def _delete_txt(self, zone: str, fqdn: str, value: str) -> None:
        update = self._update(zone)
        update.delete(dns.name.from_text(fqdn), txt_rdata(value))
        self._send(update, f"deleting a TXT value from {fqdn}")

    def _update(self, zone: str) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            zone + ".", keyring=self._keyring, keyname=self.key_name, keyalgorithm=self.algorithm
        )

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        where = f"DNS server {self.server}"
        try:
            address = ip_address(self.host, self.port)
            response = dns.query.tcp(update, address, port=self.port, timeout=self.timeout)
        except dns.tsig.PeerError as exc:
            code = _PEER_ERRORS.get(type(exc), "TSIG error")
            raise DnsUpdateError(
                f"{what}: {where} answered {code}: {_REFUSED_ADVICE}",
                provider=self.kind,
                server=self.server,
                rcode=code,
            ) from exc
        except dns.exception.Timeout as exc:
            raise DnsUpdateError(
                f"{what}: {where} did not answer within {self.timeout:g} s",
                provider=self.kind,
                server=self.server,
            ) from exc
        except (OSError, dns.exception.DNSException) as exc:
            raise DnsUpdateError(
                f"{what}: cannot talk to {where}: {exc}", provider=self.kind, server=self.server
            ) from exc
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            name = dns.rcode.to_text(rcode)
            advice = _REFUSED_ADVICE if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH) else "update failed"
            raise DnsUpdateError(
                f"{what}: {where} answered {name}: {advice}",
                provider=self.kind,
                server=self.server,
                rcode=name,
            )
