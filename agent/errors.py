"""The agent package's errors: all are :class:`store.errors.CertstoreError`, so the CLI reports them."""

from __future__ import annotations

from datetime import datetime

from store.errors import CertstoreError, ValidationError


class ConfigError(CertstoreError):
    """A configuration file or option is wrong; ``field`` names the setting."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UsageError(CertstoreError):
    """The command line asks for something that cannot be done as asked."""


# --- appended by the DNS-01 work (issue 4) -----------------------------------------------------


class DnsError(CertstoreError):
    """Publishing or removing a DNS-01 TXT record failed; ``provider`` names the provider kind."""

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message)
        self.provider = provider


class DnsZoneNotFound(DnsError):
    """``name`` lies in none of the provider's ``zones``."""

    def __init__(self, message: str, *, name: str, zones: tuple[str, ...], provider: str = "") -> None:
        super().__init__(message, provider=provider)
        self.name = name
        self.zones = zones


class DnsUpdateError(DnsError):
    """The DNS server, API or script refused or failed a change; ``server`` says where, ``rcode`` why.

    ``rcode`` is the DNS response code name (``REFUSED``, ``NOTAUTH``...) for RFC 2136, the TSIG error
    (``BADSIG``, ``BADKEY``) when the server rejected our signature, else empty.
    """

    def __init__(self, message: str, *, provider: str = "", server: str = "", rcode: str = "") -> None:
        super().__init__(message, provider=provider)
        self.server = server
        self.rcode = rcode


class DnsNotPropagated(DnsError):
    """The deadline passed before every authoritative server showed every TXT value.

    ``lagging`` maps each lagging server (``host:port``) to the ``(fqdn, value)`` pairs it does not show.
    """

    def __init__(self, message: str, lagging: dict[str, list[tuple[str, str]]]) -> None:
        super().__init__(message)
        self.lagging = lagging


# --- appended by the ACME issuer work (issue 4) --------------------------------------------------


class CertificateError(CertstoreError):
    """A key, CSR, certificate or chain is malformed, does not match, or does not verify."""


class AcmeError(CertstoreError):
    """The ACME CA refused or failed a request.

    ``problem_type`` is the RFC 8555 problem type URN (None when the CA sent none), ``identifier`` the
    host name the problem is about (if any), ``retry_after`` an aware UTC time before which retrying is
    pointless (from the CA's ``Retry-After``), ``url`` the ACME URL (directory, order) involved.
    """

    def __init__(
        self,
        message: str,
        *,
        problem_type: str | None = None,
        identifier: str | None = None,
        retry_after: datetime | None = None,
        url: str = "",
    ) -> None:
        super().__init__(message)
        self.problem_type = problem_type
        self.identifier = identifier
        self.retry_after = retry_after
        self.url = url


class RateLimited(AcmeError):
    """The CA's rate limit was hit; ``retry_after`` says when to try again (if the CA said)."""


class RejectedIdentifier(AcmeError):
    """The CA will not issue for ``identifier`` (policy, unsupported or malformed name)."""


class Unauthorized(AcmeError):
    """The CA could not validate a challenge (or refused the account access); the CA's detail is kept."""


class CAUnreachable(AcmeError):
    """The CA could not be reached, its TLS certificate did not verify, or it answered 5xx."""


class BadNonceExhausted(AcmeError):
    """The CA kept rejecting our nonces after every retry."""


class OrderTimeout(AcmeError):
    """The order did not become valid before its deadline; ``url`` is the order."""


class AccountError(AcmeError):
    """The ACME account cannot be used as configured (terms not agreed, EAB missing/wrong, no account)."""


# --- appended by the HTTP-01 responder work (issue 4) --------------------------------------------


class InvalidChallenge(ValidationError):
    """A challenge token or key authorization is malformed (not ``<token>.<thumbprint>``); never served."""


class ChallengeNotServed(CertstoreError):
    """Some responders did not serve the challenge in time; ``lagging`` maps each server to why."""

    def __init__(self, message: str, lagging: dict[str, str]) -> None:
        super().__init__(message)
        self.lagging = lagging


# --- the certmgr (lead) ------------------------------------------------------------------------


class ChallengeSetupError(CertstoreError):
    """A challenge cannot be set up for a name: no suitable challenge type, or publishing failed."""


# --- appended by the per-host agent work (issue 5) ---------------------------------------------


class UnsafePath(CertstoreError):
    """A name would make the agent write outside its data or state directory (``value`` is the name)."""

    def __init__(self, message: str, *, value: str = "") -> None:
        super().__init__(message)
        self.value = value


class AgentConfigErrors(ConfigError):
    """Several configuration problems at once; ``problems`` holds one :class:`ConfigError` per field."""

    def __init__(self, source: str, problems: list[ConfigError]) -> None:
        lines = [f"{p.field}: {p}" if p.field else str(p) for p in problems]
        super().__init__(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(lines))
        self.problems = problems


class DeployError(CertstoreError):
    """A credential cannot be deployed on this host; the message goes on its ``deploy:`` document."""

    def __init__(self, message: str, *, credential: str = "") -> None:
        super().__init__(message)
        self.credential = credential
