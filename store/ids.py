"""Every document id certstore uses, built and parsed in this one module.

An id's *kind* is the ``type`` its document must carry (``credential:web`` is a ``tls_credential``), so a
parsed id tells the models and ``validate_doc_update.js`` which schema applies. Builders validate every
part and raise :class:`ValidationError`; :func:`parse` accepts exactly what the builders can produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from store.errors import ValidationError
from store.names import challenge_token_problem, check_challenge_token, check_name, name_problem, show

SETTINGS: Final = "settings"
LEASE_CERTMGR: Final = "lease:certmgr"
DESIGN: Final = "_design/certstore"

# kinds (= document types)
KIND_SETTINGS: Final = "settings"
KIND_ACCOUNT: Final = "acme_account"
KIND_ACCOUNT_STATE: Final = "acme_account_state"
KIND_DNS: Final = "dns_provider"
KIND_SERVER: Final = "server"
KIND_CREDENTIAL: Final = "tls_credential"
KIND_CREDENTIAL_STATE: Final = "tls_credential_state"
KIND_CHALLENGE: Final = "acme_challenge"
KIND_DEPLOYMENT: Final = "deployment"
KIND_LEASE: Final = "lease"
KIND_DESIGN: Final = "design"

# prefix -> (kind of "<prefix>:<name>", kind of "<prefix>:<name>:state" or None)
_NAMED: Final = {
    "account": (KIND_ACCOUNT, KIND_ACCOUNT_STATE),
    "dns": (KIND_DNS, None),
    "server": (KIND_SERVER, None),
    "credential": (KIND_CREDENTIAL, KIND_CREDENTIAL_STATE),
}


@dataclass(frozen=True)
class ParsedId:
    """A parsed document id: its kind (the document type) and its parts (names or a token)."""

    kind: str
    parts: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The first part: the account/dns/server/credential name, the challenge token or the server."""
        if not self.parts:
            raise ValueError(f"a {self.kind} id has no name part")
        return self.parts[0]


def account_id(name: str) -> str:
    """``account:<name>``: an ACME account request (admins)."""
    return f"account:{check_name(name)}"


def account_state_id(name: str) -> str:
    """``account:<name>:state``: the registered account (certmgr)."""
    return f"account:{check_name(name)}:state"


def dns_id(name: str) -> str:
    """``dns:<name>``: a DNS provider (admins)."""
    return f"dns:{check_name(name)}"


def server_id(name: str) -> str:
    """``server:<name>``: a host running the agent (that host)."""
    return f"server:{check_name(name)}"


def credential_id(name: str) -> str:
    """``credential:<name>``: a certificate request (admins)."""
    return f"credential:{check_name(name)}"


def credential_state_id(name: str) -> str:
    """``credential:<name>:state``: issued chain, sealed key, status (certmgr)."""
    return f"credential:{check_name(name)}:state"


def challenge_id(token: str) -> str:
    """``challenge:<token>``: an HTTP-01 challenge every agent answers (certmgr)."""
    return f"challenge:{check_challenge_token(token)}"


def deploy_id(server: str, credential: str) -> str:
    """``deploy:<server>:<credential>``: what ``server`` has deployed of ``credential`` (that server)."""
    return f"deploy:{check_name(server)}:{check_name(credential)}"


def _refuse(doc_id: str, why: str) -> ValidationError:
    return ValidationError(
        f"{show(doc_id)} is not a certstore document id: {why}", field="_id", doc_id=doc_id
    )


def _kind(prefix: str, parts: list[str]) -> tuple[str, list[str]] | None:
    """The kind of ``<prefix>:<parts>`` and its name parts (unchecked), or None."""
    if prefix in _NAMED:
        kind, state_kind = _NAMED[prefix]
        if len(parts) == 1:
            return kind, parts
        if len(parts) == 2 and parts[1] == "state" and state_kind is not None:
            return state_kind, parts[:1]
    elif prefix == "deploy" and len(parts) == 2:
        return KIND_DEPLOYMENT, parts
    elif prefix == "challenge" and len(parts) == 1:
        return KIND_CHALLENGE, parts
    return None


def parse(doc_id: str) -> ParsedId:
    """Parse a document id; raise ValidationError for anything the builders above would not produce."""
    if doc_id == SETTINGS:
        return ParsedId(KIND_SETTINGS)
    if doc_id == LEASE_CERTMGR:
        return ParsedId(KIND_LEASE)
    if doc_id == DESIGN:
        return ParsedId(KIND_DESIGN)
    prefix, colon, rest = doc_id.partition(":")
    found = _kind(prefix, rest.split(":")) if colon else None
    if found is None:
        raise _refuse(
            doc_id,
            "expected settings, lease:certmgr, account:<name>[:state], dns:<name>, server:<name>, "
            "credential:<name>[:state], challenge:<token> or deploy:<server>:<credential>",
        )
    kind, parts = found
    if kind == KIND_CHALLENGE:
        problem = challenge_token_problem(parts[0])
        if problem is not None:
            raise _refuse(doc_id, f"the token {problem}")
        return ParsedId(kind, tuple(parts))
    for part in parts:
        problem = name_problem(part)
        if problem is not None:
            raise _refuse(doc_id, f"the name {show(part)} {problem}")
    return ParsedId(kind, tuple(parts))


# --- ids outside the certstore database --------------------------------------------------------

#: ``_replicator`` documents certstore manages start with this.
REPLICATION_PREFIX: Final = "certstore-"
REPLICATION_DIRECTIONS: Final = ("pull", "push")


def replication_name(name: str) -> str:
    """A replication pair's name (the same rule as every name part)."""
    return check_name(name)


def replication_doc_id(name: str, direction: str) -> str:
    """``certstore-<name>-<pull|push>``: one direction of a hub/replica pair in ``_replicator``."""
    if direction not in REPLICATION_DIRECTIONS:
        raise ValidationError(
            f"a replication direction is pull or push, not {show(direction)}", field="direction"
        )
    return f"{REPLICATION_PREFIX}{check_name(name)}-{direction}"

