"""The DNS-01 provider base class: zone lookup, add/delete bookkeeping, and the helpers providers share.

A provider (RFC 2136, dns-lexicon, an external script) writes three small things: ``from_config`` (read its
settings and credentials from a ``dns:`` document), ``_add_txt`` and ``_delete_txt``. :class:`DnsProvider`
runs the rest: it finds the zone of each record (longest configured zone that contains the name),
checks every name before changing anything, remembers exactly which values this instance added, and on
:meth:`DnsProvider.cleanup` deletes only those. Providers always *add* a value to a name and *delete one
value*; they never replace a TXT RRset, because a wildcard and its apex (``*.example.com`` and
``example.com``) need two TXT values on the same ``_acme-challenge`` name at once, and a value someone else
published there must survive.

Waiting for propagation is :func:`agent.dns.propagation.wait_for_txt`, which the caller runs between
:meth:`DnsProvider.present` and answering the CA (with :attr:`DnsProvider.resolver_overrides`): the order's
deadline is the caller's to choose.

Use one instance per ACME order: it tracks what that order added.
"""

from __future__ import annotations

import abc
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import dns.inet

from agent.errors import ConfigError, DnsError, DnsZoneNotFound
from store.errors import ValidationError
from store.names import endpoint_problem, show

CHALLENGE_LABEL = "_acme-challenge"
DEFAULT_TTL = 60
MAX_TXT_VALUE = 255  # one TXT character-string; ACME values are 43 characters of base64url
MAX_NAME = 253
_LABEL_RE = re.compile(r"[a-z0-9_-]{1,63}")
_REDACTED = "***"


def canonical_name(name: str) -> str:
    """``name`` lowercased, without a trailing dot: the form zones and records are compared in."""
    return name.strip().lower().removesuffix(".")


def _name_problem(name: str) -> str | None:
    if not name or len(name) > MAX_NAME:
        return f"must be 1-{MAX_NAME} characters"
    if any(_LABEL_RE.fullmatch(label) is None for label in name.split(".")):
        return 'must be dot-separated labels of a-z, 0-9, "_" and "-" (A-labels, 1-63 characters each)'
    return None


@dataclass(frozen=True)
class TxtRecord:
    """One TXT value to publish: ``fqdn`` in canonical form (lowercase A-labels, no trailing dot)."""

    fqdn: str
    value: str

    def __post_init__(self) -> None:
        # The label rule admits only lowercase and no empty label, so the name is also canonical.
        problem = _name_problem(self.fqdn)
        if problem is not None:
            raise ValidationError(f"TXT record name {show(self.fqdn)} {problem}", field="fqdn")
        if not 1 <= len(self.value) <= MAX_TXT_VALUE or not all(" " <= ch <= "~" for ch in self.value):
            raise ValidationError(
                f"TXT value {show(self.value)} must be 1-{MAX_TXT_VALUE} printable ASCII characters",
                field="value",
            )


def challenge_record(hostname: str, value: str) -> TxtRecord:
    """The DNS-01 record for ``hostname`` as stored (A-labels); ``*.example.com`` shares ``example.com``'s."""
    name = canonical_name(hostname).removeprefix("*.")
    return TxtRecord(f"{CHALLENGE_LABEL}.{name}", value)


def zone_for(name: str, zones: Iterable[str]) -> str | None:
    """The longest of ``zones`` that contains ``name`` (whole labels; the apex itself counts), or None.

    The result is in canonical form. ``badexample.com`` is not in ``example.com``.
    """
    wanted = canonical_name(name)
    best: str | None = None
    for zone in zones:
        candidate = canonical_name(zone)
        inside = wanted == candidate or wanted.endswith("." + candidate)
        if inside and (best is None or len(candidate) > len(best)):
            best = candidate
    return best


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***`` (errors quoting library or script output)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return text


def printable_tail(text: str, *, lines: int = 10, chars: int = 1000) -> str:
    """The last lines of some output, control characters removed, cut to ``chars`` (for one-line errors)."""
    kept = ["".join(ch for ch in line if ch.isprintable()).strip() for line in text.splitlines()[-lines:]]
    joined = " | ".join(line for line in kept if line)
    return joined if len(joined) <= chars else "..." + joined[-chars:]


# --- reading a dns: document's settings --------------------------------------------------------


def config_str(config: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    """A required (or defaulted) non-empty string setting; ConfigError naming ``key`` otherwise."""
    value = config.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"the DNS provider setting {key!r} must be a non-empty string", field=key)
    return value


def config_number(config: Mapping[str, Any], key: str, *, default: float, low: float, high: float) -> float:
    """A numeric setting within ``[low, high]`` (``default`` when absent)."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"the DNS provider setting {key!r} must be a number from {low:g} to {high:g}", field=key
        )
    return float(value)


def config_str_list(config: Mapping[str, Any], key: str, *, required: bool = True) -> tuple[str, ...]:
    """A list of non-empty strings (required non-empty unless ``required`` is False)."""
    value = config.get(key, [] if not required else None)
    if (
        not isinstance(value, list | tuple)
        or (required and not value)
        or not all(isinstance(item, str) and item for item in value)
    ):
        raise ConfigError(f"the DNS provider setting {key!r} must be a list of non-empty strings", field=key)
    return tuple(value)


def parse_endpoint(value: str, *, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as ``(host, port)``."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest else str(default_port)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, str(default_port)
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{show(value)} is not host or host:port", field="server")
    return host, int(port_text)


def ip_address(host: str, port: int) -> str:
    """``host`` if it is an IP address, else its first address (dnspython sends to addresses only).

    Raises OSError when the name does not resolve.
    """
    if dns.inet.is_address(host):
        return host
    return str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])


def _zones(config: Mapping[str, Any]) -> tuple[str, ...]:
    zones = tuple(canonical_name(zone) for zone in config_str_list(config, "zones"))
    for zone in zones:
        problem = _name_problem(zone)
        if problem is not None:
            raise ConfigError(f"zone {show(zone)} {problem}", field="zones")
    return zones


def _nameservers(config: Mapping[str, Any]) -> tuple[str, ...]:
    servers = config_str_list(config, "nameservers", required=False)
    for server in servers:
        problem = endpoint_problem(server)
        if problem is not None:
            raise ConfigError(f"name server {show(server)}: {problem}", field="nameservers")
    return servers


# --- the base class ----------------------------------------------------------------------------


class DnsProvider(abc.ABC):
    """Publishes and removes DNS-01 TXT values in the zones it serves; subclasses talk to one kind of DNS.

    ``zones`` are the zones this provider may change; ``ttl`` the TTL of added values; ``nameservers``
    (``host:port``) the authoritative servers to check propagation at instead of the zones' NS records.
    ``secrets`` are the credential values: they are cut out of every error message this provider raises.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        zones: Sequence[str],
        *,
        ttl: int = DEFAULT_TTL,
        nameservers: Sequence[str] = (),
        secrets: Iterable[str] = (),
    ) -> None:
        if not zones:
            raise ConfigError("a DNS provider needs at least one zone", field="zones")
        self.zones = tuple(canonical_name(zone) for zone in zones)
        self.ttl = ttl
        self.nameservers = tuple(nameservers)
        self._secrets = tuple(secrets)
        self._added: dict[TxtRecord, str] = {}  # record -> zone it was added to, in insertion order
        self._lock = threading.Lock()

    @staticmethod
    def base_options(config: Mapping[str, Any]) -> dict[str, Any]:
        """The settings every provider takes, as keyword arguments: ``zones``, ``ttl``, ``nameservers``."""
        return {
            "zones": _zones(config),
            "ttl": int(config_number(config, "ttl", default=DEFAULT_TTL, low=1, high=86400)),
            "nameservers": _nameservers(config),
        }

    # --- what a provider implements ------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Self:
        """Build the provider from a ``dns:`` document's settings and its unsealed credentials."""

    @abc.abstractmethod
    def _add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Add ``value`` to the TXT RRset of ``fqdn`` in ``zone`` (keeping the values already there)."""

    @abc.abstractmethod
    def _delete_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Remove exactly ``value`` from the TXT RRset of ``fqdn`` (other values stay)."""

    # --- the sequence --------------------------------------------------------------------------

    @property
    def added(self) -> tuple[TxtRecord, ...]:
        """The records this instance added and has not yet cleaned up, in the order they were added."""
        with self._lock:
            return tuple(self._added)

    @property
    def resolver_overrides(self) -> dict[str, list[str]] | None:
        """``zone -> [host:port]`` for :func:`agent.dns.propagation.wait_for_txt`, when configured."""
        if not self.nameservers:
            return None
        return {zone: list(self.nameservers) for zone in self.zones}

    def zone_of(self, record: TxtRecord) -> str:
        """The zone ``record`` is published in; DnsZoneNotFound when none of ours contains it."""
        zone = zone_for(record.fqdn, self.zones)
        if zone is None:
            raise DnsZoneNotFound(
                f"{record.fqdn} is in none of the zones this DNS provider serves ({', '.join(self.zones)})",
                name=record.fqdn,
                zones=self.zones,
                provider=self.kind,
            )
        return zone

    def present(self, records: Sequence[TxtRecord]) -> None:
        """Add every record. Every name is checked first, so a name outside our zones changes nothing.

        If an add fails part-way, the records added before it are remembered: call :meth:`cleanup`.
        """
        placed = [(record, self.zone_of(record)) for record in records]
        for record, zone in placed:
            with self._lock:
                if record in self._added:
                    continue
            self._call(self._add_txt, zone, record)
            with self._lock:
                self._added[record] = zone

    def cleanup(self, records: Sequence[TxtRecord] | None = None) -> None:
        """Delete the given records (default: all) that this instance added; others are left alone.

        Every deletion is tried; those that fail stay remembered (a later cleanup retries them) and the
        first failure is raised after the rest were attempted.
        """
        with self._lock:
            wanted = list(self._added) if records is None else [r for r in records if r in self._added]
            todo = [(record, self._added[record]) for record in wanted]
        first_error: DnsError | None = None
        for record, zone in todo:
            try:
                self._call(self._delete_txt, zone, record)
            except DnsError as exc:
                first_error = first_error or exc
                continue
            with self._lock:
                self._added.pop(record, None)
        if first_error is not None:
            raise first_error

    def _call(self, method: Callable[[str, str, str], None], zone: str, record: TxtRecord) -> None:
        """Run ``_add_txt``/``_delete_txt``; make sure no secret leaks through a DnsError's message."""
        try:
            method(zone, record.fqdn, record.value)
        except DnsError as exc:
            clean = redact(str(exc), self._secrets)
            if clean != str(exc):
                exc.args = (clean, *exc.args[1:])
            raise


class UnusableProvider(DnsProvider):
    """Stands in for a ``dns:`` document that cannot be used (bad settings, credentials sealed for
    another certmgr): names under its zones fail with its reason instead of looking unserved."""

    kind = "unusable"

    def __init__(self, zones: Sequence[str], reason: str) -> None:
        super().__init__(zones)
        self.reason = reason

    @classmethod
    def from_config(cls, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Self:
        """Not built from a configuration: see :meth:`__init__`."""
        raise ConfigError("an unusable DNS provider has no configuration", field="kind")

    def _add_txt(self, zone: str, fqdn: str, value: str) -> None:
        raise DnsError(self.reason, provider=self.kind)

    def _delete_txt(self, zone: str, fqdn: str, value: str) -> None:
        raise DnsError(self.reason, provider=self.kind)
