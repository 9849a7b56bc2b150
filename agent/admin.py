"""What admins do from the CLI: write credential requests, action requests, ACME accounts, DNS providers.

Each function validates through the document models (the same rules ``validate_doc_update`` applies)
and writes one document. Secrets an admin hands over (an EAB HMAC key, DNS API credentials) are
sealed at once for every certmgr (servers with the ``certmgr`` role), so they never sit in the
database in plaintext.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from nacl.public import PublicKey

from agent.renewal import utcnow
from store import ids
from store.couch import Database, JSONDict
from store.documents import AcmeAccount, DnsProvider, Document, RevokeAction, Server, TlsCredential
from store.enrollment import CERTMGR_ROLE
from store.errors import Conflict, NotFound, ValidationError
from store.hostkey import public_key_from_b64
from store.names import ChallengeKind, DnsKind, KeyType, RevocationReason
from store.sealing import seal

M = TypeVar("M", bound=Document)

#: Well-known ACME directories an admin may name instead of a URL.
DIRECTORY_PRESETS: Mapping[str, str] = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


def certmgr_keys(db: Database) -> dict[str, PublicKey]:
    """Public keys of every enrolled server with the certmgr role (secrets are sealed to these)."""
    rows = db.all_docs(include_docs=True, startkey="server:", endkey="server:\ufff0")["rows"]
    keys = {}
    for row in rows:
        try:
            server = Server.from_doc(row["doc"])
        except (ValidationError, KeyError, TypeError):
            continue
        if CERTMGR_ROLE in server.roles and server.public_key:
            keys[server.name] = public_key_from_b64(server.public_key)
    if not keys:
        raise ValidationError(
            "no certmgr is enrolled yet, so there is nobody to seal the secret for: enroll the certmgr host "
            "with `certstore server enroll NAME --certmgr` first"
        )
    return keys


def _create(db: Database, doc: JSONDict, *, replace: bool) -> JSONDict:
    existing = db.get_or_none(str(doc["_id"]))
    if existing is not None:
        if not replace:
            raise ValidationError(
                f"{doc['_id']} already exists (use --replace to overwrite it)", doc_id=doc["_id"]
            )
        doc["_rev"] = existing["_rev"]
    db.put(doc)
    return doc


def add_credential(
    db: Database,
    name: str,
    hostnames: Sequence[str],
    *,
    servers: Sequence[str] = (),
    account: str | None = None,
    challenge: str | None = None,
    key_type: str | None = None,
    keyfile: str | None = None,
    reload_hook: str | None = None,
    profile: str | None = None,
    live_check: str | None = None,
    replace: bool = False,
) -> TlsCredential:
    """Write ``credential:<name>``; host names may be typed in Unicode (stored as punycode)."""
    fields: dict[str, Any] = {
        "servers": list(servers),
        "account": account,
        "keyfile": keyfile,
        "reload_hook": reload_hook,
        "profile": profile,
        "live_check": live_check,
    }
    if challenge is not None:
        fields["challenge"] = _choice(ChallengeKind, challenge, "challenge")
    if key_type is not None:
        fields["key_type"] = _choice(KeyType, key_type, "key type")
    credential = TlsCredential.create(name, hostnames, **fields)
    doc = _create(db, credential.to_doc(), replace=replace)
    credential.rev = doc["_rev"]
    return credential


def _choice(enum: Any, value: str, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValidationError(f"unknown {what} {value!r} (use one of: {allowed})") from None


def _update(db: Database, model_class: type[M], doc_id: str, what: str, change: Callable[[M], None]) -> M:
    """Read ``doc_id``, apply ``change`` to its model and write it back, retrying on conflicts."""
    for _attempt in range(5):
        try:
            model = model_class.from_doc(db.get(doc_id))
        except NotFound:
            raise ValidationError(f"there is no {what} ({doc_id})", doc_id=doc_id) from None
        change(model)
        doc = model.validated().to_doc()
        try:
            db.put(doc)
        except Conflict:
            continue  # it changed meanwhile: read it again
        model.rev = doc["_rev"]
        return model
    raise ValidationError(f"{doc_id} keeps changing; try again", doc_id=doc_id)


def request_action(
    db: Database, name: str, action: str, *, reason: str | None = None, at: datetime | None = None
) -> TlsCredential:
    """Set ``actions.<action>`` on ``credential:<name>`` to now; the certmgr carries it out once."""
    now = at or utcnow()
    if action not in ("renew", "rekey", "revoke"):
        raise ValidationError(f"unknown action {action!r} (renew, rekey or revoke)")
    why = _choice(RevocationReason, reason or "unspecified", "revocation reason")

    def ask(credential: TlsCredential) -> None:
        if action == "revoke":
            credential.actions.revoke = RevokeAction(at=now, reason=why)
        else:
            setattr(credential.actions, action, now)

    return _update(db, TlsCredential, ids.credential_id(name), f"credential {name!r}", ask)


def add_account(
    db: Database,
    name: str,
    directory: str,
    *,
    email: str | None = None,
    agree_tos: bool = False,
    eab_kid: str | None = None,
    eab_hmac: str | None = None,
    replace: bool = False,
) -> AcmeAccount:
    """Write ``account:<name>`` (``directory`` is a URL or a preset name); the EAB HMAC is sealed."""
    if (eab_kid is None) != (eab_hmac is None):
        raise ValidationError("External Account Binding needs both --eab-kid and --eab-hmac")
    account = AcmeAccount(
        name=name,
        directory_url=DIRECTORY_PRESETS.get(directory, directory),
        contact=[f"mailto:{email}"] if email else [],
        tos_agreed=agree_tos,
        eab_kid=eab_kid,
        sealed_eab_hmac=dict(seal(eab_hmac.encode(), certmgr_keys(db))) if eab_hmac else None,
    ).validated()
    doc = _create(db, account.to_doc(), replace=replace)
    account.rev = doc["_rev"]
    return account


def request_rollover(db: Database, name: str, *, at: datetime | None = None) -> AcmeAccount:
    """Set ``rollover`` on ``account:<name>``: the certmgr replaces the account key once."""
    now = at or utcnow()

    def ask(account: AcmeAccount) -> None:
        account.rollover = now

    return _update(db, AcmeAccount, ids.account_id(name), f"ACME account {name!r}", ask)


def add_dns_provider(
    db: Database,
    name: str,
    kind: str,
    zones: Sequence[str],
    *,
    options: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    replace: bool = False,
) -> DnsProvider:
    """Write ``dns:<name>``; ``secrets`` (TSIG secret, API token…) are sealed for the certmgr."""
    sealed = dict(seal(json.dumps(dict(secrets)).encode(), certmgr_keys(db))) if secrets else None
    provider = DnsProvider(
        name=name,
        kind=_choice(DnsKind, kind, "DNS provider kind"),
        zones=list(zones),
        options=dict(options or {}),
        sealed_credentials=sealed,
    ).validated()
    doc = _create(db, provider.to_doc(), replace=replace)
    provider.rev = doc["_rev"]
    return provider


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """``["k=v", …]`` from the command line as a dict, with a clear error for a malformed pair."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"{what} must be KEY=VALUE, not {pair!r}")
        out[key] = value
    return out
