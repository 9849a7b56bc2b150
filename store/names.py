"""Value rules shared by ids and document models: host names (IDNA 2008), names, enums, timestamps, PEM keys.

Every rule here has a twin in ``design_docs/certstore/validate_doc_update.js``; the corpus in
``tests/corpus/`` feeds the same documents to both and requires the same verdict. Each rule is one
``*_problem(value) -> str | None`` function (the reason, phrased for an admin, or None when the value is
fine) plus a public ``check_*`` function that raises :class:`ValidationError` naming the value.

Host names in stored documents must already be normalised (lowercase A-labels, no trailing dot) because
the database's JavaScript cannot do IDNA; :func:`normalize_hostname` converts what an admin types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum

import idna

from store.errors import ValidationError

MAX_HOSTNAMES = 100
MAX_HOSTNAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
_SHOW_LIMIT = 80

_LABEL_RE = re.compile(r"[a-z0-9-]+")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CHALLENGE_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_KEY_ID_RE = re.compile(r"x25519:[0-9a-f]{32}")
_X25519_RE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
_EAB_KID_RE = re.compile(r"[A-Za-z0-9._-]{1,256}")
_THUMBPRINT_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_SERIAL_RE = re.compile(r"[0-9a-f]{1,40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_IPV4_RE = re.compile(r"[0-9]+(\.[0-9]+){3}")
_IPV6_RE = re.compile(r"\[?[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\]?")
_URL_RE = re.compile(r"(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[!-~]*)?")
_MAILTO_RE = re.compile(r"mailto:[!-?A-~]+@[!-?A-~]+")
_ENDPOINT_RE = re.compile(r"([a-z0-9.-]+|\[[0-9a-f:.]+\]):([0-9]{1,5})")
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?Z"
)
# PEM armour is case-sensitive; whitespace inside the header may be any mix of blanks and line breaks so
# a key pasted through a mangling editor is still caught. The JS twin uses the identical pattern.
_PRIVATE_KEY_RE = re.compile(r"-----BEGIN[ \t\r\n]+(?:[A-Z0-9]+[ \t\r\n]+)*PRIVATE[ \t\r\n]+KEY")


class KeyType(StrEnum):
    """Private key algorithms a credential may ask for."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"


class Status(StrEnum):
    """Lifecycle of a credential, held on its state document (written by the certmgr)."""

    DRAFT = "draft"
    PENDING = "pending"
    ISSUED = "issued"
    RENEW = "renew"
    REVOKED = "revoked"
    ERROR = "error"
    EXPIRED = "expired"
    WAITING = "waiting"
    ARCHIVED = "archived"


class ChallengeKind(StrEnum):
    """How a credential's names are validated; ``auto`` picks dns-01 where a DNS provider serves the zone."""

    AUTO = "auto"
    HTTP_01 = "http-01"
    DNS_01 = "dns-01"


class Provider(StrEnum):
    """Where a credential's certificate comes from."""

    ACME = "acme"
    IMPORT = "import"
    MANUAL_CSR = "manual-csr"
    INTERNAL_CA = "internal-ca"


class DnsKind(StrEnum):
    """How a DNS provider document publishes TXT records."""

    RFC2136 = "rfc2136"
    LEXICON = "lexicon"
    EXEC = "exec"


class RevocationReason(StrEnum):
    """RFC 5280 CRLReason names an admin may give when revoking (removeFromCRL is not a reason to revoke)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    CERTIFICATE_HOLD = "certificateHold"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"
    AA_COMPROMISE = "aACompromise"

    @property
    def code(self) -> int:
        """The RFC 5280 reason code (what ACME's revokeCert ``reason`` carries)."""
        return _REASON_CODES[self]


_REASON_CODES = {
    RevocationReason.UNSPECIFIED: 0,
    RevocationReason.KEY_COMPROMISE: 1,
    RevocationReason.CA_COMPROMISE: 2,
    RevocationReason.AFFILIATION_CHANGED: 3,
    RevocationReason.SUPERSEDED: 4,
    RevocationReason.CESSATION_OF_OPERATION: 5,
    RevocationReason.CERTIFICATE_HOLD: 6,
    RevocationReason.PRIVILEGE_WITHDRAWN: 9,
    RevocationReason.AA_COMPROMISE: 10,
}


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, as JavaScript measures strings (limits must agree with the JS twin)."""
    return len(text.encode("utf-16-le")) // 2


def show(value: object) -> str:
    """Quote a value for an error message: JSON (so NUL and newlines are visible), cut at 80 UTF-16 units.

    Cut exactly as the JS twin cuts (never inside a surrogate pair), so both give the same message.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if utf16_length(text) <= _SHOW_LIMIT:
        return text
    units = text.encode("utf-16-le", "surrogatepass")
    cut = (_SHOW_LIMIT - 4) * 2
    if 0xD800 <= int.from_bytes(units[cut - 2 : cut], "little") <= 0xDBFF:
        cut -= 2
    return units[:cut].decode("utf-16-le", "surrogatepass") + '..."'


def _require(value: str, problem: str | None) -> str:
    if problem is not None:
        raise ValidationError(f"{show(value)}: {problem}")
    return value


# --- host names --------------------------------------------------------------------------------


_WILDCARD_PROBLEM = 'a wildcard must be the whole left-most label ("*.example.com")'


def _ip_problem(name: str) -> str | None:
    if _IPV4_RE.fullmatch(name) is None and _IPV6_RE.fullmatch(name) is None:
        return None
    return "is an IP address; certificates for IP addresses are not supported, use a DNS name"


def _label_problem(label: str) -> str | None:
    if label == "":
        return "has an empty label"
    if "*" in label:
        return _WILDCARD_PROBLEM
    if len(label) > MAX_LABEL_LENGTH:
        return f"label {show(label)} is longer than {MAX_LABEL_LENGTH} characters"
    if _LABEL_RE.fullmatch(label) is None:
        return f'label {show(label)} may only contain a-z, 0-9 and "-"'
    if label.startswith("-") or label.endswith("-"):
        return f"label {show(label)} starts or ends with a hyphen"
    if label[2:4] == "--" and not label.startswith("xn--"):
        return f'label {show(label)} has "--" in third and fourth position, which is reserved for "xn--"'
    return None


def hostname_problem(name: str, *, wildcard: bool = True) -> str | None:
    """Why ``name`` is not a normalised host name (lowercase A-labels), or None if it is one."""
    if name == "":
        return "is empty"
    if len(name) > MAX_HOSTNAME_LENGTH:
        return f"is longer than {MAX_HOSTNAME_LENGTH} characters"
    ip = _ip_problem(name)
    if ip is not None:
        return ip
    if not name.isascii() or name != name.lower() or name.endswith("."):
        return _not_normalised(name, wildcard=wildcard)
    labels = name.split(".")
    if labels[0] == "*":
        if not wildcard:
            return "may not be a wildcard here"
        labels = labels[1:]
    if len(labels) < 2:
        return "needs at least two labels (like host.example.com)"
    for label in labels:
        problem = _label_problem(label)
        if problem is not None:
            return problem
    if labels[-1].isdigit():
        return f"the last label {show(labels[-1])} is all digits"
    return None


def _not_normalised(name: str, *, wildcard: bool) -> str:
    advice = "write it in lowercase punycode (xn--...) without a trailing dot"
    try:
        advice = f"write {show(normalize_hostname(name, wildcard=wildcard))}"
    except ValidationError:
        pass
    return f"is not in normalised form: {advice}, or add it with the certstore CLI, which converts it"


def check_hostname(name: str, *, wildcard: bool = True) -> str:
    """Return ``name`` if it is a normalised host name (as stored), else raise ValidationError."""
    return _require(name, hostname_problem(name, wildcard=wildcard))


def normalize_hostname(raw: str, *, wildcard: bool = True) -> str:
    """Convert a host name as typed (Unicode, any case, trailing dot) to its stored A-label form."""
    name = raw.strip()
    prefix = "*." if name.startswith("*.") else ""
    body = name.removeprefix(prefix).removesuffix(".")
    problem = _ip_problem(body)
    if problem is None and "*" in body:
        problem = _WILDCARD_PROBLEM
    if problem is None:
        try:
            body = idna.encode(body, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            problem = f"is not a valid host name ({exc})"
    converted = prefix + body
    _require(raw, problem or hostname_problem(converted, wildcard=wildcard))
    return converted


def first_duplicate(items: Sequence[str]) -> tuple[int, int] | None:
    """Indexes ``(first, second)`` of the first value listed twice, or None."""
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item in seen:
            return seen[item], index
        seen[item] = index
    return None


def normalize_hostnames(raw: Iterable[str], *, wildcard: bool = True) -> list[str]:
    """Normalise a list of typed host names: 1..100 names, no two the same after conversion."""
    originals = list(raw)
    if not 1 <= len(originals) <= MAX_HOSTNAMES:
        raise ValidationError(f"give between 1 and {MAX_HOSTNAMES} host names, not {len(originals)}")
    names = [normalize_hostname(name, wildcard=wildcard) for name in originals]
    duplicate = first_duplicate(names)
    if duplicate is not None:
        first, second = duplicate
        raise ValidationError(
            f"{show(originals[first])} and {show(originals[second])} are the same host name "
            f"({names[first]}); list it once"
        )
    return names


# --- names and tokens --------------------------------------------------------------------------


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid name (id part, server name, hook tag, role), or None."""
    if _NAME_RE.fullmatch(value) is None:
        return 'must be 1-63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit'
    if ".." in value:
        return 'must not contain ".."'
    return None


def check_name(value: str) -> str:
    """Return ``value`` if it is a valid name part (the rule for id parts and server names)."""
    return _require(value, name_problem(value))


check_server_name = check_name


def challenge_token_problem(value: str) -> str | None:
    """Why ``value`` is not an ACME challenge token (base64url, 16-128 characters), or None."""
    if _CHALLENGE_TOKEN_RE.fullmatch(value) is None:
        return "must be 16-128 base64url characters (A-Z, a-z, 0-9, _ and -)"
    return None


def check_challenge_token(value: str) -> str:
    """Return ``value`` if it is a valid ACME challenge token."""
    return _require(value, challenge_token_problem(value))


def token_problem(value: str) -> str | None:
    """Why ``value`` is not a token (an ACME profile name), or None."""
    if _TOKEN_RE.fullmatch(value) is None:
        return 'must be 1-64 characters of A-Z, a-z, 0-9, ".", "_" and "-", starting with a letter or digit'
    return None


def keyfile_problem(value: str) -> str | None:
    """Why ``value`` is not a safe key file name (a token without ".."), or None."""
    problem = token_problem(value)
    if problem is None and ".." in value:
        problem = 'must not contain ".."'
    return problem


def check_keyfile(value: str) -> str:
    """Return ``value`` if it is usable as a file name in the agent's keyring directory."""
    return _require(value, keyfile_problem(value))


def key_id_problem(value: str) -> str | None:
    """Why ``value`` is not a host key id (``x25519:`` + 32 hex digits, see store/hostkey.py), or None."""
    if _KEY_ID_RE.fullmatch(value) is None:
        return 'must be "x25519:" followed by 32 lowercase hex digits (the hash of the public key)'
    return None


def x25519_key_problem(value: str) -> str | None:
    """Why ``value`` is not a base64-encoded 32-byte X25519 public key, or None."""
    if _X25519_RE.fullmatch(value) is None:
        return "must be a 32-byte X25519 public key in standard base64 (44 characters ending in =)"
    return None


def serial_problem(value: str) -> str | None:
    """Why ``value`` is not a certificate serial (lowercase hex, up to 20 octets), or None."""
    if _SERIAL_RE.fullmatch(value) is None:
        return "must be the serial number in lowercase hex (up to 40 digits)"
    return None


def sha256_problem(value: str) -> str | None:
    """Why ``value`` is not a SHA-256 fingerprint (64 lowercase hex digits), or None."""
    if _SHA256_RE.fullmatch(value) is None:
        return "must be a SHA-256 fingerprint as 64 lowercase hex digits"
    return None


def url_problem(value: str, *, schemes: tuple[str, ...] = ("https",)) -> str | None:
    """Why ``value`` is not an absolute URL with one of ``schemes`` (ASCII, no spaces), or None."""
    match = _URL_RE.fullmatch(value)
    if match is None or match.group(1) not in schemes or len(value) > 2048:
        return f"must be a {' or '.join(schemes)} URL (ASCII, no spaces, at most 2048 characters)"
    return None


def contact_problem(value: str) -> str | None:
    """Why ``value`` is not a ``mailto:`` contact, or None."""
    if _MAILTO_RE.fullmatch(value) is None or len(value) > 320:
        return 'must be an e-mail address written as "mailto:admin@example.com"'
    return None


def notify_problem(value: str) -> str | None:
    """Why ``value`` is not a notification target (a ``mailto:`` contact or an https webhook), or None."""
    if contact_problem(value) is None or url_problem(value) is None:
        return None
    return 'must be "mailto:someone@example.com" or an https:// webhook URL'


def endpoint_problem(value: str) -> str | None:
    """Why ``value`` is not ``host:port`` (lowercase DNS name, IPv4 or ``[IPv6]``; port 1-65535), or None."""
    match = _ENDPOINT_RE.fullmatch(value)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        return 'must be host:port, like "localhost:443", "127.0.0.1:8443" or "[::1]:443"'
    return None


def absolute_path_problem(value: str) -> str | None:
    """Why ``value`` is not an absolute POSIX path without NUL or ".." segments, or None."""
    if not value.startswith("/") or "\0" in value or ".." in value.split("/") or len(value) > 4096:
        return 'must be an absolute path (starting with "/", no ".." segments, at most 4096 characters)'
    return None


def eab_kid_problem(value: str) -> str | None:
    """Why ``value`` is not an External Account Binding key id (1-256 of A-Z a-z 0-9 . _ -), or None."""
    if _EAB_KID_RE.fullmatch(value) is None:
        return "must be the key id your CA gave you: 1-256 characters of A-Z, a-z, 0-9, ., _ and -"
    return None


def chain_problem(value: str) -> str | None:
    """Why ``value`` is not a PEM certificate chain (at most 64 KiB), or None."""
    if "-----BEGIN CERTIFICATE-----" not in value or len(value) > 65536:
        return 'must be PEM certificates ("-----BEGIN CERTIFICATE-----"), at most 65536 characters'
    return None


def key_authorization_problem(value: str, token: str) -> str | None:
    """Why ``value`` is not ``<token>.<base64url SHA-256 JWK thumbprint>`` for ``token``, or None."""
    thumbprint = value.removeprefix(token + ".")
    if thumbprint == value or _THUMBPRINT_RE.fullmatch(thumbprint) is None:
        return "must be the challenge token, a dot and the 43-character account key thumbprint"
    return None


def choice_problem(value: str, choices: type[StrEnum]) -> str | None:
    """Why ``value`` is not one of the enum's values, or None."""
    allowed = [member.value for member in choices]
    if value not in allowed:
        return "must be one of " + ", ".join(allowed)
    return None


# --- timestamps --------------------------------------------------------------------------------


_TIMESTAMP_PROBLEM = 'must be an ISO-8601 UTC timestamp like "2026-01-31T12:00:00Z" (year 1970 or later)'


def _timestamp_or_none(value: str) -> datetime | None:
    match = _TIMESTAMP_RE.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    micro = int((match.group(7) or "0").ljust(6, "0"))
    try:
        parsed = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        return None
    return parsed if parsed.year >= 1970 else None


def timestamp_problem(value: str) -> str | None:
    """Why ``value`` is not an ISO-8601 UTC timestamp (``2026-01-31T12:00:00Z``, optional fraction)."""
    return _TIMESTAMP_PROBLEM if _timestamp_or_none(value) is None else None


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 UTC timestamp as stored in documents (years 1970-9999, up to microseconds)."""
    parsed = _timestamp_or_none(value)
    if parsed is None:
        raise ValidationError(f"{show(value)}: {_TIMESTAMP_PROBLEM}")
    return parsed


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as a stored timestamp (UTC, ``Z``, microseconds only when non-zero)."""
    if moment.tzinfo is None:
        raise ValueError("format_timestamp needs an aware datetime")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


# --- plaintext private keys --------------------------------------------------------------------


def find_plaintext_private_key(obj: object) -> str | None:
    """Path (``a.b[2]``; ``$`` for the value itself) of the first string holding a PEM private key header.

    Walks depth-first in document order; each dict key is looked at just before its value, and a key that
    holds a header is reported as ``<path>.<key>``. Iterative, so hostile nesting cannot exhaust the stack.
    """
    stack: list[tuple[str, object]] = [("$", obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _PRIVATE_KEY_RE.search(value) is not None:
                return path
        elif isinstance(value, dict):
            prefix = "" if path == "$" else path + "."
            children: list[tuple[str, object]] = []
            for key, child in value.items():
                children.append((prefix + "<key>", key))
                children.append((prefix + str(key), child))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{index}]", child) for index, child in enumerate(value)]))
    return None
