"""Typed models for every certstore document: ``from_doc`` validates a stored document, ``to_doc`` writes it.

The field names here are the schema (see docs/documents.md); ``design_docs/certstore/validate_doc_update.js``
enforces the same rules inside the database. Top-level fields the model does not know are kept in
``extra`` and written back unchanged (newer agents may add fields); unknown fields inside the small nested
objects (``actions``, ``error_history`` entries, ...) and unknown ``_`` fields are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Self, TypeVar

from store import ids
from store.errors import PlaintextPrivateKey, ValidationError
from store.names import (
    MAX_HOSTNAMES,
    ChallengeKind,
    DnsKind,
    KeyType,
    Provider,
    RevocationReason,
    Status,
    absolute_path_problem,
    chain_problem,
    choice_problem,
    contact_problem,
    eab_kid_problem,
    endpoint_problem,
    find_plaintext_private_key,
    first_duplicate,
    format_timestamp,
    hostname_problem,
    key_authorization_problem,
    key_id_problem,
    keyfile_problem,
    name_problem,
    normalize_hostnames,
    notify_problem,
    parse_timestamp,
    serial_problem,
    sha256_problem,
    show,
    timestamp_problem,
    token_problem,
    url_problem,
    utf16_length,
    x25519_key_problem,
)

Sealed = dict[str, Any]
"""An envelope from store/sealing.py, opaque here: a JSON object with an integer format version ``v``."""

E = TypeVar("E", bound=StrEnum)
Rule = Callable[[str], str | None]

# CouchDB's own members; any other top-level field starting with "_" is refused.
COUCH_FIELDS = frozenset(
    {
        "_id",
        "_rev",
        "_deleted",
        "_attachments",
        "_conflicts",
        "_deleted_conflicts",
        "_local_seq",
        "_revs_info",
        "_revisions",
    }
)
# Of those, the ones a model keeps and writes back (the rest are read-only metadata).
_KEPT_COUCH_FIELDS = frozenset({"_attachments"})
MAX_TEXT = 2000
MAX_SERVERS = 1000
MAX_ROLES = 20
MAX_CONTACTS = 10
MAX_PATHS = 32
MAX_ERROR_HISTORY = 20
MAX_REV = 200
MAX_FAILURES = 1_000_000


def _as_integer(value: object) -> int | None:
    # JSON has one number type: 1.0 is an integer to JavaScript, so it must be one here too.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class _Reader:
    """Reads the fields of one raw JSON object, naming the document id and field path in every error."""

    def __init__(self, raw: Mapping[str, Any], doc_id: str, prefix: str = "") -> None:
        self.raw = raw
        self.doc_id = doc_id
        self.prefix = prefix

    def fail(self, name: str, reason: str, *values: object) -> ValidationError:
        where = self.prefix + name
        shown = "".join(f" {show(value)}:" for value in values)
        return ValidationError(f"{self.doc_id}: {where}{shown} {reason}", field=where, doc_id=self.doc_id)

    def get(self, name: str) -> object:
        """The raw value; JSON null counts as absent."""
        return self.raw.get(name)

    def _string(self, name: str, value: object, rule: Rule | None, max_length: int) -> str:
        if not isinstance(value, str):
            raise self.fail(name, "must be a string", value)
        problem = rule(value) if rule is not None else None
        if problem is None and utf16_length(value) > max_length:
            problem = f"is longer than {max_length} characters"
        if problem is not None:
            raise self.fail(name, problem, value)
        return value

    def text(self, name: str, rule: Rule | None = None, max_length: int = MAX_TEXT) -> str | None:
        value = self.get(name)
        return None if value is None else self._string(name, value, rule, max_length)

    def required_text(self, name: str, rule: Rule | None = None, max_length: int = MAX_TEXT) -> str:
        value = self.get(name)
        if value is None:
            raise self.fail(name, "is required")
        return self._string(name, value, rule, max_length)

    def timestamp(self, name: str) -> datetime | None:
        value = self.text(name, timestamp_problem)
        return None if value is None else parse_timestamp(value)

    def required_timestamp(self, name: str) -> datetime:
        return parse_timestamp(self.required_text(name, timestamp_problem))

    def choice(self, name: str, choices: type[E]) -> E | None:
        value = self.text(name, lambda text: choice_problem(text, choices))
        return None if value is None else choices(value)

    def required_choice(self, name: str, choices: type[E]) -> E:
        return choices(self.required_text(name, lambda text: choice_problem(text, choices)))

    def flag(self, name: str) -> bool | None:
        value = self.get(name)
        if value is not None and not isinstance(value, bool):
            raise self.fail(name, "must be true or false", value)
        return value

    def required_flag(self, name: str) -> bool:
        value = self.flag(name)
        if value is None:
            raise self.fail(name, "is required")
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        number = _as_integer(value)
        if number is None or not low <= number <= high:
            raise self.fail(name, f"must be a whole number from {low} to {high}", value)
        return number

    def mapping(self, name: str) -> dict[str, Any] | None:
        value = self.get(name)
        if value is not None and not isinstance(value, dict):
            raise self.fail(name, "must be a JSON object", value)
        return value

    def sealed(self, name: str) -> Sealed | None:
        value = self.mapping(name)
        version = None if value is None else _as_integer(value.get("v"))
        if value is not None and (version is None or version < 1):
            raise self.fail(name, 'must be a sealed envelope: a JSON object with an integer version "v"')
        return value

    def nested(self, name: str, allowed: Iterable[str]) -> _Reader | None:
        value = self.mapping(name)
        if value is None:
            return None
        return _Reader(value, self.doc_id, f"{self.prefix}{name}.").refuse_unknown(allowed)

    def refuse_unknown(self, allowed: Iterable[str]) -> Self:
        known = set(allowed)
        for key in self.raw:
            if key not in known:
                raise self.fail(key, "is not a known field here (allowed: " + ", ".join(sorted(known)) + ")")
        return self

    def _list(self, name: str, min_items: int, max_items: int) -> list[Any]:
        value = self.get(name)
        if value is None and min_items == 0:
            return []
        if not isinstance(value, list):
            raise self.fail(name, "must be a list" if value is not None else "is required")
        if not min_items <= len(value) <= max_items:
            raise self.fail(name, f"must list {min_items} to {max_items} entries, not {len(value)}")
        return value

    def texts(self, name: str, rule: Rule, *, max_items: int, min_items: int = 0) -> list[str]:
        """A list of distinct strings, each following ``rule``."""
        items = [
            self._string(f"{name}[{index}]", value, rule, MAX_TEXT)
            for index, value in enumerate(self._list(name, min_items, max_items))
        ]
        duplicate = first_duplicate(items)
        if duplicate is not None:
            first, second = duplicate
            raise self.fail(f"{name}[{second}]", f"is listed twice (also {name}[{first}])", items[second])
        return items

    def records(self, name: str, allowed: Iterable[str], *, max_items: int) -> list[_Reader]:
        """A list of JSON objects, each with only the ``allowed`` fields."""
        readers = []
        for index, value in enumerate(self._list(name, 0, max_items)):
            if not isinstance(value, dict):
                raise self.fail(f"{name}[{index}]", "must be a JSON object", value)
            reader = _Reader(value, self.doc_id, f"{self.prefix}{name}[{index}].")
            readers.append(reader.refuse_unknown(allowed))
        return readers

    def both_or_neither(self, first: str, second: str) -> None:
        if (self.get(first) is None) != (self.get(second) is None):
            missing = first if self.get(first) is None else second
            other = second if missing == first else first
            raise self.fail(missing, f"is required when {other} is set")

    def ordered(self, earlier: str, later: str) -> None:
        start, end = self.timestamp(earlier), self.timestamp(later)
        if start is not None and end is not None and not start < end:
            raise self.fail(later, f"must be later than {earlier}", self.get(later))


def _hostname_rule(wildcard: bool) -> Rule:
    return lambda name: hostname_problem(name, wildcard=wildcard)


def _put(doc: dict[str, Any], name: str, value: object) -> None:
    """Write a field in its JSON form, leaving out absent (None) values."""
    if isinstance(value, datetime):
        doc[name] = format_timestamp(value)
    elif isinstance(value, StrEnum):
        doc[name] = value.value
    elif value is not None:
        doc[name] = value


# --- the base class ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class Document:
    """Fields every document shares. ``extra`` keeps unknown top-level fields so they survive a rewrite."""

    TYPE: ClassVar[str]
    rev: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        """The document's ``_id``, built by store/ids.py from the model's name fields."""
        raise NotImplementedError

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Self:
        """Validate a stored document of this type and return its model."""
        model = validate_document(doc)
        if not isinstance(model, cls):
            raise ValidationError(
                f"{model.doc_id}: is a {model.TYPE} document, not a {cls.TYPE}", doc_id=model.doc_id
            )
        return model

    def to_doc(self) -> dict[str, Any]:
        """The JSON document to store (absent optional fields are left out)."""
        doc: dict[str, Any] = {"_id": self.doc_id}
        _put(doc, "_rev", self.rev)
        doc["type"] = self.TYPE
        doc.update(self.extra)
        for name, value in self._fields().items():
            _put(doc, name, value)
        return doc

    def validated(self) -> Self:
        """This model after a round trip through ``from_doc``: raises ValidationError if any field is bad."""
        return type(self).from_doc(self.to_doc())

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        raise NotImplementedError

    def _fields(self) -> dict[str, Any]:
        raise NotImplementedError


# --- admin documents ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class Settings(Document):
    """``settings``: fleet-wide defaults."""

    TYPE: ClassVar[str] = ids.KIND_SETTINGS
    default_account: str | None = None
    default_key_type: KeyType = KeyType.ECDSA_P256
    default_challenge: ChallengeKind = ChallengeKind.AUTO
    renew_before_days: int | None = None
    notify: list[str] = field(default_factory=list)

    @property
    def doc_id(self) -> str:
        return ids.SETTINGS

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        return cls(
            default_account=r.text("default_account", name_problem),
            default_key_type=r.choice("default_key_type", KeyType) or KeyType.ECDSA_P256,
            default_challenge=r.choice("default_challenge", ChallengeKind) or ChallengeKind.AUTO,
            renew_before_days=r.integer("renew_before_days", 1, 365),
            notify=r.texts("notify", notify_problem, max_items=MAX_CONTACTS),
        )

    def _fields(self) -> dict[str, Any]:
        return {
            "default_account": self.default_account,
            "default_key_type": self.default_key_type,
            "default_challenge": self.default_challenge,
            "renew_before_days": self.renew_before_days,
            "notify": list(self.notify),
        }


@dataclass(kw_only=True)
class AcmeAccount(Document):
    """``account:<name>``: the ACME account an admin asks for; the certmgr registers it."""

    TYPE: ClassVar[str] = ids.KIND_ACCOUNT
    name: str
    directory_url: str
    contact: list[str] = field(default_factory=list)
    tos_agreed: bool = False
    eab_kid: str | None = None
    sealed_eab_hmac: Sealed | None = None
    # An admin's request to replace the account key (RFC 8555 key change), carried out once.
    rollover: datetime | None = None

    @property
    def doc_id(self) -> str:
        return ids.account_id(self.name)

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        model = cls(
            name=parts[0],
            directory_url=r.required_text("directory_url", url_problem),
            contact=r.texts("contact", contact_problem, max_items=MAX_CONTACTS),
            tos_agreed=bool(r.flag("tos_agreed")),
            eab_kid=r.text("eab_kid", eab_kid_problem),
            sealed_eab_hmac=r.sealed("sealed_eab_hmac"),
            rollover=r.timestamp("rollover"),
        )
        r.both_or_neither("eab_kid", "sealed_eab_hmac")
        return model

    def _fields(self) -> dict[str, Any]:
        return {
            "directory_url": self.directory_url,
            "contact": list(self.contact),
            "tos_agreed": self.tos_agreed,
            "eab_kid": self.eab_kid,
            "sealed_eab_hmac": self.sealed_eab_hmac,
            "rollover": self.rollover,
        }


@dataclass(kw_only=True)
class DnsProvider(Document):
    """``dns:<name>``: publishes DNS-01 TXT records for the zones it serves."""

    TYPE: ClassVar[str] = ids.KIND_DNS
    name: str
    kind: DnsKind
    zones: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    sealed_credentials: Sealed | None = None

    @property
    def doc_id(self) -> str:
        return ids.dns_id(self.name)

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        return cls(
            name=parts[0],
            kind=r.required_choice("kind", DnsKind),
            zones=r.texts("zones", _hostname_rule(False), min_items=1, max_items=MAX_HOSTNAMES),
            options=r.mapping("options") or {},
            sealed_credentials=r.sealed("sealed_credentials"),
        )

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "zones": list(self.zones),
            "options": dict(self.options),
            "sealed_credentials": self.sealed_credentials,
        }


@dataclass(kw_only=True)
class RevokeAction:
    """A revocation request: when it was asked for and why."""

    at: datetime
    reason: RevocationReason = RevocationReason.UNSPECIFIED


@dataclass(kw_only=True)
class Actions:
    """Action requests on a credential, each a timestamp; the certmgr acts on each new timestamp once."""

    renew: datetime | None = None
    revoke: RevokeAction | None = None
    rekey: datetime | None = None

    @classmethod
    def read(cls, r: _Reader | None) -> Actions:
        if r is None:
            return cls()
        revoke = r.nested("revoke", ("at", "reason"))
        return cls(
            renew=r.timestamp("renew"),
            revoke=None
            if revoke is None
            else RevokeAction(
                at=revoke.required_timestamp("at"),
                reason=revoke.choice("reason", RevocationReason) or RevocationReason.UNSPECIFIED,
            ),
            rekey=r.timestamp("rekey"),
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        _put(doc, "renew", self.renew)
        if self.revoke is not None:
            doc["revoke"] = {"at": format_timestamp(self.revoke.at), "reason": str(self.revoke.reason)}
        _put(doc, "rekey", self.rekey)
        return doc


_ACTIONS = ("renew", "revoke", "rekey")


@dataclass(kw_only=True)
class TlsCredential(Document):
    """``credential:<name>``: the certificate request an admin writes."""

    TYPE: ClassVar[str] = ids.KIND_CREDENTIAL
    name: str
    hostnames: list[str]
    provider: Provider = Provider.ACME
    account: str | None = None
    challenge: ChallengeKind = ChallengeKind.AUTO
    key_type: KeyType | None = None
    servers: list[str] = field(default_factory=list)
    keyfile: str | None = None
    reload_hook: str | None = None
    profile: str | None = None
    live_check: str | None = None
    actions: Actions = field(default_factory=Actions)

    @property
    def doc_id(self) -> str:
        return ids.credential_id(self.name)

    @property
    def keyfile_name(self) -> str:
        """The keyring file name the agent writes: ``keyfile``, or the credential's name."""
        return self.keyfile or self.name

    @classmethod
    def create(cls, name: str, hostnames: Iterable[str], **fields: Any) -> TlsCredential:
        """Build a validated request from names as an admin types them (Unicode, any case)."""
        return cls(name=name, hostnames=normalize_hostnames(hostnames), **fields).validated()

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        model = cls(
            name=parts[0],
            hostnames=r.texts("hostnames", _hostname_rule(True), min_items=1, max_items=MAX_HOSTNAMES),
            provider=r.choice("provider", Provider) or Provider.ACME,
            account=r.text("account", name_problem),
            challenge=r.choice("challenge", ChallengeKind) or ChallengeKind.AUTO,
            key_type=r.choice("key_type", KeyType),
            servers=r.texts("servers", name_problem, max_items=MAX_SERVERS),
            keyfile=r.text("keyfile", keyfile_problem),
            reload_hook=r.text("reload_hook", name_problem),
            profile=r.text("profile", token_problem),
            live_check=r.text("live_check", endpoint_problem),
            actions=Actions.read(r.nested("actions", _ACTIONS)),
        )
        if model.challenge is ChallengeKind.HTTP_01:
            for index, hostname in enumerate(model.hostnames):
                if hostname.startswith("*."):
                    reason = 'a wildcard needs the dns-01 challenge, not "http-01"'
                    raise r.fail(f"hostnames[{index}]", reason, hostname)
        return model

    def _fields(self) -> dict[str, Any]:
        return {
            "hostnames": list(self.hostnames),
            "provider": self.provider,
            "account": self.account,
            "challenge": self.challenge,
            "key_type": self.key_type,
            "servers": list(self.servers),
            "keyfile": self.keyfile,
            "reload_hook": self.reload_hook,
            "profile": self.profile,
            "live_check": self.live_check,
            "actions": self.actions.to_json(),
        }


# --- certmgr documents -------------------------------------------------------------------------


@dataclass(kw_only=True)
class AcmeAccountState(Document):
    """``account:<name>:state``: the registered ACME account (key sealed to the certmgr)."""

    TYPE: ClassVar[str] = ids.KIND_ACCOUNT_STATE
    name: str
    account_url: str | None = None
    sealed_key: Sealed | None = None
    registered_at: datetime | None = None
    sealed_next_key: Sealed | None = None
    status_message: str | None = None
    directory_url: str | None = None
    rolled_over: datetime | None = None  # the ``rollover`` request last carried out

    @property
    def doc_id(self) -> str:
        return ids.account_state_id(self.name)

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        return cls(
            name=parts[0],
            account_url=r.text("account_url", url_problem),
            sealed_key=r.sealed("sealed_key"),
            registered_at=r.timestamp("registered_at"),
            sealed_next_key=r.sealed("sealed_next_key"),
            status_message=r.text("status_message"),
            directory_url=r.text("directory_url", url_problem),
            rolled_over=r.timestamp("rolled_over"),
        )

    def _fields(self) -> dict[str, Any]:
        return {
            "account_url": self.account_url,
            "sealed_key": self.sealed_key,
            "registered_at": self.registered_at,
            "sealed_next_key": self.sealed_next_key,
            "status_message": self.status_message,
            "directory_url": self.directory_url,
            "rolled_over": self.rolled_over,
        }


@dataclass(kw_only=True)
class HandledActions:
    """The action timestamps (from the request's ``actions``) the certmgr has already carried out."""

    renew: datetime | None = None
    revoke: datetime | None = None
    rekey: datetime | None = None

    @classmethod
    def read(cls, r: _Reader | None) -> HandledActions:
        if r is None:
            return cls()
        return cls(renew=r.timestamp("renew"), revoke=r.timestamp("revoke"), rekey=r.timestamp("rekey"))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name in _ACTIONS:
            _put(doc, name, getattr(self, name))
        return doc


@dataclass(kw_only=True)
class ErrorEntry:
    """One failure in a credential's error history."""

    at: datetime
    message: str


# Statuses that promise a deployable certificate: the state must then carry all of it.
_CERTIFICATE_FIELDS = ("chain_pem", "not_before", "not_after", "serial", "fingerprint_sha256", "sealed_key")
_STATUSES_WITH_CERTIFICATE = (Status.ISSUED, Status.RENEW)


@dataclass(kw_only=True)
class TlsCredentialState(Document):
    """``credential:<name>:state``: what the certmgr has done for a request (chain, sealed key, status)."""

    TYPE: ClassVar[str] = ids.KIND_CREDENTIAL_STATE
    name: str
    status: Status
    status_message: str | None = None
    chain_pem: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    serial: str | None = None
    fingerprint_sha256: str | None = None
    sealed_key: Sealed | None = None
    recipients: list[str] = field(default_factory=list)
    handled_actions: HandledActions = field(default_factory=HandledActions)
    next_renewal: datetime | None = None
    error_history: list[ErrorEntry] = field(default_factory=list)
    rekey_reason: str | None = None
    # What the current certificate was issued for: a request that no longer matches is re-issued.
    hostnames: list[str] = field(default_factory=list)
    key_type: KeyType | None = None
    account: str | None = None
    # Retry bookkeeping: the request revision last acted on, failures in a row, when to try again.
    request_rev: str | None = None
    failures: int = 0
    next_attempt: datetime | None = None

    @property
    def doc_id(self) -> str:
        return ids.credential_state_id(self.name)

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        model = cls(
            name=parts[0],
            status=r.required_choice("status", Status),
            status_message=r.text("status_message"),
            chain_pem=r.text("chain_pem", chain_problem, max_length=65536),
            not_before=r.timestamp("not_before"),
            not_after=r.timestamp("not_after"),
            serial=r.text("serial", serial_problem),
            fingerprint_sha256=r.text("fingerprint_sha256", sha256_problem),
            sealed_key=r.sealed("sealed_key"),
            recipients=r.texts("recipients", name_problem, max_items=MAX_SERVERS),
            handled_actions=HandledActions.read(r.nested("handled_actions", _ACTIONS)),
            next_renewal=r.timestamp("next_renewal"),
            error_history=[
                ErrorEntry(at=entry.required_timestamp("at"), message=entry.required_text("message"))
                for entry in r.records("error_history", ("at", "message"), max_items=MAX_ERROR_HISTORY)
            ],
            rekey_reason=r.text("rekey_reason"),
            hostnames=r.texts("hostnames", _hostname_rule(True), max_items=MAX_HOSTNAMES),
            key_type=r.choice("key_type", KeyType),
            account=r.text("account", name_problem),
            request_rev=r.text("request_rev", max_length=MAX_REV),
            failures=r.integer("failures", 0, MAX_FAILURES) or 0,
            next_attempt=r.timestamp("next_attempt"),
        )
        r.ordered("not_before", "not_after")
        if model.status in _STATUSES_WITH_CERTIFICATE:
            for name in _CERTIFICATE_FIELDS:
                if r.get(name) is None:
                    raise r.fail(name, f'is required when status is "{model.status.value}"')
        if model.sealed_key is not None and not model.recipients:
            raise r.fail("recipients", "must name the servers the key is sealed for")
        return model

    def _fields(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "status_message": self.status_message,
            "chain_pem": self.chain_pem,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "serial": self.serial,
            "fingerprint_sha256": self.fingerprint_sha256,
            "sealed_key": self.sealed_key,
            "recipients": list(self.recipients),
            "handled_actions": self.handled_actions.to_json(),
            "next_renewal": self.next_renewal,
            "error_history": [
                {"at": format_timestamp(entry.at), "message": entry.message} for entry in self.error_history
            ],
            "rekey_reason": self.rekey_reason,
            "hostnames": list(self.hostnames),
            "key_type": self.key_type,
            "account": self.account,
            "request_rev": self.request_rev,
            "failures": self.failures,
            "next_attempt": self.next_attempt,
        }


@dataclass(kw_only=True)
class AcmeChallenge(Document):
    """``challenge:<token>``: an HTTP-01 key authorization every agent serves until it expires."""

    TYPE: ClassVar[str] = ids.KIND_CHALLENGE
    token: str
    key_authorization: str
    hostnames: list[str]
    expires: datetime
    credential: str | None = None

    @property
    def doc_id(self) -> str:
        return ids.challenge_id(self.token)

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        token = parts[0]
        return cls(
            token=token,
            key_authorization=r.required_text(
                "key_authorization", lambda value: key_authorization_problem(value, token)
            ),
            hostnames=r.texts("hostnames", _hostname_rule(False), min_items=1, max_items=MAX_HOSTNAMES),
            expires=r.required_timestamp("expires"),
            credential=r.text("credential", name_problem),
        )

    def _fields(self) -> dict[str, Any]:
        return {
            "key_authorization": self.key_authorization,
            "hostnames": list(self.hostnames),
            "expires": self.expires,
            "credential": self.credential,
        }


@dataclass(kw_only=True)
class Lease(Document):
    """``lease:certmgr``: which host may act as the certmgr, until when."""

    TYPE: ClassVar[str] = ids.KIND_LEASE
    holder: str
    acquired_at: datetime
    expires: datetime

    @property
    def doc_id(self) -> str:
        return ids.LEASE_CERTMGR

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        model = cls(
            holder=r.required_text("holder", name_problem),
            acquired_at=r.required_timestamp("acquired_at"),
            expires=r.required_timestamp("expires"),
        )
        r.ordered("acquired_at", "expires")
        return model

    def _fields(self) -> dict[str, Any]:
        return {"holder": self.holder, "acquired_at": self.acquired_at, "expires": self.expires}


# --- agent documents ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class Server(Document):
    """``server:<name>``: a host's public key and liveness, written by its agent."""

    TYPE: ClassVar[str] = ids.KIND_SERVER
    name: str
    public_key: str | None = None
    key_id: str | None = None
    roles: list[str] = field(default_factory=list)
    heartbeat: datetime | None = None
    agent_version: str | None = None
    responder_url: str | None = None

    @property
    def doc_id(self) -> str:
        return ids.server_id(self.name)

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        model = cls(
            name=parts[0],
            public_key=r.text("public_key", x25519_key_problem),
            key_id=r.text("key_id", key_id_problem),
            roles=r.texts("roles", name_problem, max_items=MAX_ROLES),
            heartbeat=r.timestamp("heartbeat"),
            agent_version=r.text("agent_version", max_length=64),
            responder_url=r.text("responder_url", lambda url: url_problem(url, schemes=("http", "https"))),
        )
        r.both_or_neither("public_key", "key_id")
        return model

    def _fields(self) -> dict[str, Any]:
        return {
            "public_key": self.public_key,
            "key_id": self.key_id,
            "roles": list(self.roles),
            "heartbeat": self.heartbeat,
            "agent_version": self.agent_version,
            "responder_url": self.responder_url,
        }


@dataclass(kw_only=True)
class Outcome:
    """The result of one step on a host (reload hook, live check)."""

    ok: bool
    at: datetime
    message: str | None = None

    @classmethod
    def read(cls, r: _Reader | None) -> Outcome | None:
        if r is None:
            return None
        return cls(ok=r.required_flag("ok"), at=r.required_timestamp("at"), message=r.text("message"))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"ok": self.ok, "at": format_timestamp(self.at)}
        _put(doc, "message", self.message)
        return doc


_OUTCOME_FIELDS = ("ok", "at", "message")


@dataclass(kw_only=True)
class Deployment(Document):
    """``deploy:<server>:<credential>``: what a host has deployed, written by its agent."""

    TYPE: ClassVar[str] = ids.KIND_DEPLOYMENT
    server: str
    credential: str
    serial: str | None = None
    paths: list[str] = field(default_factory=list)
    deployed_at: datetime | None = None
    hook_result: Outcome | None = None
    live_check: Outcome | None = None
    error: str | None = None

    @property
    def doc_id(self) -> str:
        return ids.deploy_id(self.server, self.credential)

    @classmethod
    def _read(cls, r: _Reader, parts: tuple[str, ...]) -> Self:
        return cls(
            server=parts[0],
            credential=parts[1],
            serial=r.text("serial", serial_problem),
            paths=r.texts("paths", absolute_path_problem, max_items=MAX_PATHS),
            deployed_at=r.timestamp("deployed_at"),
            hook_result=Outcome.read(r.nested("hook_result", _OUTCOME_FIELDS)),
            live_check=Outcome.read(r.nested("live_check", _OUTCOME_FIELDS)),
            error=r.text("error"),
        )

    def _fields(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "paths": list(self.paths),
            "deployed_at": self.deployed_at,
            "hook_result": None if self.hook_result is None else self.hook_result.to_json(),
            "live_check": None if self.live_check is None else self.live_check.to_json(),
            "error": self.error,
        }


# --- dispatch ----------------------------------------------------------------------------------

MODELS: dict[str, type[Document]] = {
    model.TYPE: model
    for model in (
        Settings,
        AcmeAccount,
        AcmeAccountState,
        DnsProvider,
        Server,
        TlsCredential,
        TlsCredentialState,
        AcmeChallenge,
        Deployment,
        Lease,
    )
}


def _doc_id(doc: Mapping[str, Any]) -> str:
    doc_id = doc.get("_id")
    return doc_id if isinstance(doc_id, str) else "(document without _id)"


def refuse_private_key(doc: Mapping[str, Any]) -> None:
    """Raise PlaintextPrivateKey if a PEM private key appears anywhere in ``doc`` (keys or values)."""
    path = find_plaintext_private_key(doc)
    if path is not None:
        doc_id = _doc_id(doc)
        raise PlaintextPrivateKey(
            f"{doc_id}: {path} holds a plaintext private key; keys must never be stored in the database "
            "unsealed (certstore seals them for each server with access)",
            field=path,
            doc_id=doc_id,
        )


def validate_document(doc: Mapping[str, Any]) -> Document:
    """Validate any stored certstore document and return its model (dispatching on the id and ``type``)."""
    refuse_private_key(doc)
    doc_id = doc.get("_id")
    if not isinstance(doc_id, str):
        raise ValidationError("a document needs a string _id", field="_id")
    r = _Reader(doc, doc_id)
    for key in doc:
        if key.startswith("_") and key not in COUCH_FIELDS:
            raise r.fail(key, "is not allowed: top-level fields starting with _ are reserved by CouchDB")
    if doc.get("_deleted") is True:
        raise r.fail("_deleted", "is set: a deleted document has no model")
    parsed = ids.parse(doc_id)
    model_class = MODELS.get(parsed.kind)
    if model_class is None:
        raise r.fail("_id", "is a design document, which has no model")
    if doc.get("type") != parsed.kind:
        raise r.fail("type", f'must be "{parsed.kind}" for this id', doc.get("type"))
    model = model_class._read(r, parsed.parts)
    model.rev = r.text("_rev")
    known = {"_id", "_rev", "type", *model._fields()}
    model.extra = {
        key: value
        for key, value in doc.items()
        if key not in known and (not key.startswith("_") or key in _KEPT_COUCH_FIELDS)
    }
    return model


def validate_write(doc: Mapping[str, Any]) -> None:
    """Check a document about to be written exactly as validate_doc_update.js does, apart from roles.

    Deletions are only checked for private keys (a tombstone can carry a body); design documents are
    code, left to CouchDB's own admin check.
    """
    doc_id = doc.get("_id")
    if isinstance(doc_id, str) and doc_id.startswith("_design/"):
        return
    if doc.get("_deleted") is True:
        refuse_private_key(doc)
        return
    validate_document(doc)
