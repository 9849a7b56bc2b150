"""The fleet at a glance: every credential's health light, who deployed which serial, server heartbeats.

``collect(db, now)`` reads the whole database once (``_all_docs?include_docs=true``) and hands the
documents to ``from_docs``, a pure function that tests feed with synthetic documents. The light follows
Domino's certificate health view:

- **red**: the certificate has expired or expires within ``expiry_warning`` (default 7 days), or the
  status is ``error``, ``revoked`` or ``expired``;
- **yellow**: the renewal date (``next_renewal``) has passed, the status is ``renew``, ``pending``,
  ``waiting`` or ``draft``, the certmgr has not picked the request up yet, or a server with access has
  not deployed the current serial;
- **green**: otherwise.

Documents that fail validation are not fatal: they are listed in ``FleetStatus.invalid`` and skipped.
``to_json`` gives scripts a stable shape with ISO-8601 UTC timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from store import ids
from store.couch import Database
from store.documents import Deployment, Server, TlsCredential, TlsCredentialState, validate_document
from store.errors import ValidationError
from store.names import Status, format_timestamp

#: Red when the certificate expires within this long.
DEFAULT_EXPIRY_WARNING = timedelta(days=7)
#: A server whose last heartbeat is older than this is flagged as stale.
DEFAULT_STALE_AFTER = timedelta(minutes=10)

_RED_STATUSES = frozenset({Status.ERROR, Status.REVOKED, Status.EXPIRED})
_YELLOW_STATUSES = frozenset({Status.RENEW, Status.PENDING, Status.WAITING, Status.DRAFT})
# Statuses whose certificate is meant to be in use, so its expiry and its deployments matter.
_LIVE_STATUSES = frozenset({Status.ISSUED, Status.RENEW})


class Light(StrEnum):
    """The traffic light of one credential (ordered: a worse light wins)."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


_LIGHT_ORDER = (Light.GREEN, Light.YELLOW, Light.RED)
# The document kinds status reads; the rest of the database is skipped.
_WANTED_KINDS = frozenset(
    {ids.KIND_CREDENTIAL, ids.KIND_CREDENTIAL_STATE, ids.KIND_SERVER, ids.KIND_DEPLOYMENT}
)


class DeployState(StrEnum):
    """How one server's deployment of a credential compares with the current certificate."""

    CURRENT = "current"  # the current serial is deployed
    OUTDATED = "outdated"  # another serial is deployed (not yet updated, or stuck)
    MISSING = "missing"  # the server has access but has written no deploy document
    ERROR = "error"  # the server's last attempt failed (its deploy document carries the error)
    NO_ACCESS = "no-access"  # a deploy document from a server that is no longer listed


@dataclass(frozen=True)
class Thresholds:
    """When a certificate turns red and when a heartbeat counts as stale."""

    expiry_warning: timedelta = DEFAULT_EXPIRY_WARNING
    stale_after: timedelta = DEFAULT_STALE_AFTER


@dataclass(frozen=True)
class ServerDeployment:
    """What one server holds of one credential (from ``deploy:<server>:<credential>``)."""

    server: str
    state: DeployState
    serial: str | None = None
    deployed_at: datetime | None = None
    error: str | None = None
    paths: tuple[str, ...] = ()
    live_check_ok: bool | None = None
    live_check_message: str | None = None


@dataclass(frozen=True)
class CredentialStatus:
    """One credential: the request, what the certmgr made of it, its light and its deployments.

    ``status`` is None while the certmgr has not written a state document yet.
    """

    name: str
    light: Light
    reasons: tuple[str, ...]
    hostnames: tuple[str, ...]
    servers: tuple[str, ...]
    status: Status | None = None
    status_message: str | None = None
    serial: str | None = None
    not_after: datetime | None = None
    next_renewal: datetime | None = None
    requested: bool = True
    deployments: tuple[ServerDeployment, ...] = ()

    @property
    def status_text(self) -> str:
        """The status, or what it means that there is none."""
        return self.status.value if self.status is not None else "not picked up yet"


@dataclass(frozen=True)
class ServerStatus:
    """One server's identity and liveness (from ``server:<name>``)."""

    name: str
    enrolled: bool
    stale: bool
    roles: tuple[str, ...] = ()
    heartbeat: datetime | None = None
    heartbeat_age: timedelta | None = None
    agent_version: str | None = None
    responder_url: str | None = None


@dataclass(frozen=True)
class InvalidDocument:
    """A document that failed validation and was left out of the picture."""

    doc_id: str
    message: str


@dataclass(frozen=True)
class FleetStatus:
    """Everything ``certstore status`` shows, as of ``now``."""

    now: datetime
    credentials: tuple[CredentialStatus, ...]
    servers: tuple[ServerStatus, ...]
    invalid: tuple[InvalidDocument, ...] = ()

    def count(self, light: Light) -> int:
        """How many credentials show ``light``."""
        return sum(1 for credential in self.credentials if credential.light is light)


@dataclass
class _Docs:
    """The documents status needs, parsed, keyed by name."""

    requests: dict[str, TlsCredential] = field(default_factory=dict)
    states: dict[str, TlsCredentialState] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    deployments: dict[str, dict[str, Deployment]] = field(default_factory=dict)
    invalid: list[InvalidDocument] = field(default_factory=list)

    def add(self, doc: Mapping[str, Any]) -> None:
        doc_id = doc.get("_id")
        if not isinstance(doc_id, str) or doc_id.startswith("_design/") or doc.get("_deleted") is True:
            return
        try:
            kind = ids.parse(doc_id).kind
            if kind not in _WANTED_KINDS:
                return
            model = validate_document(doc)
        except ValidationError as exc:
            self.invalid.append(InvalidDocument(doc_id, str(exc)))
            return
        if isinstance(model, TlsCredential):
            self.requests[model.name] = model
        elif isinstance(model, TlsCredentialState):
            self.states[model.name] = model
        elif isinstance(model, Server):
            self.servers[model.name] = model
        elif isinstance(model, Deployment):
            self.deployments.setdefault(model.credential, {})[model.server] = model


def collect(db: Database, now: datetime, thresholds: Thresholds | None = None) -> FleetStatus:
    """Read the database once and build the fleet's status as of ``now`` (an aware datetime)."""
    rows = db.all_docs(include_docs=True)["rows"]
    return from_docs((row["doc"] for row in rows if isinstance(row.get("doc"), dict)), now, thresholds)


def from_docs(
    docs: Iterable[Mapping[str, Any]], now: datetime, thresholds: Thresholds | None = None
) -> FleetStatus:
    """Build the fleet's status from raw documents (any mix; unrelated ones are ignored)."""
    limits = thresholds or Thresholds()
    parsed = _Docs()
    for doc in docs:
        parsed.add(doc)
    names = sorted(parsed.requests.keys() | parsed.states.keys())
    credentials = tuple(_credential(name, parsed, now, limits) for name in names)
    servers = tuple(_server(parsed.servers[name], now, limits) for name in sorted(parsed.servers))
    invalid = tuple(sorted(parsed.invalid, key=lambda item: item.doc_id))
    return FleetStatus(now=now, credentials=credentials, servers=servers, invalid=invalid)


def _deployments(
    access: Iterable[str], found: Mapping[str, Deployment], current_serial: str | None
) -> tuple[ServerDeployment, ...]:
    listed = set(access)
    result = []
    for server in sorted(listed | found.keys()):
        deployment = found.get(server)
        if deployment is None:
            result.append(ServerDeployment(server=server, state=DeployState.MISSING))
            continue
        if server not in listed:
            state = DeployState.NO_ACCESS
        elif deployment.error:
            state = DeployState.ERROR
        elif deployment.serial is not None and deployment.serial == current_serial:
            state = DeployState.CURRENT
        else:
            state = DeployState.OUTDATED
        live = deployment.live_check
        result.append(
            ServerDeployment(
                server=server,
                state=state,
                serial=deployment.serial,
                deployed_at=deployment.deployed_at,
                error=deployment.error,
                paths=tuple(deployment.paths),
                live_check_ok=None if live is None else live.ok,
                live_check_message=None if live is None else live.message,
            )
        )
    return tuple(result)


def human_duration(delta: timedelta) -> str:
    """A duration as an admin reads it: ``3 days``, ``5 h``, ``12 min``, ``40 s`` (rounded down)."""
    seconds = int(abs(delta.total_seconds()))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count != 1 else ''}"
    return f"{seconds} s"


def _judge(
    state: TlsCredentialState | None,
    requested: bool,
    deployments: Iterable[ServerDeployment],
    now: datetime,
    limits: Thresholds,
) -> tuple[Light, tuple[str, ...]]:
    """The light and the reasons for it (each reason names what is wrong; none when green)."""
    verdicts: list[tuple[Light, str]] = []
    if not requested:
        verdicts.append((Light.YELLOW, "the request (credential document) has been deleted"))
    if state is None:
        verdicts.append((Light.YELLOW, "the certmgr has not picked the request up yet"))
        return _worst(verdicts)
    if state.status in _RED_STATUSES:
        verdicts.append((Light.RED, f"status is {state.status.value}"))
    elif state.status in _YELLOW_STATUSES:
        verdicts.append((Light.YELLOW, f"status is {state.status.value}"))
    if state.status in _LIVE_STATUSES:
        if state.not_after is not None and state.not_after <= now:
            verdicts.append((Light.RED, f"expired {human_duration(now - state.not_after)} ago"))
        elif state.not_after is not None and state.not_after - now <= limits.expiry_warning:
            verdicts.append((Light.RED, f"expires in {human_duration(state.not_after - now)}"))
        if state.next_renewal is not None and state.next_renewal <= now:
            verdicts.append((Light.YELLOW, "the renewal date has passed"))
        for deployment in deployments:
            problem = _DEPLOY_PROBLEMS.get(deployment.state)
            if problem is not None:
                verdicts.append((Light.YELLOW, f"{deployment.server} {problem}"))
    return _worst(verdicts)


_DEPLOY_PROBLEMS = {
    DeployState.OUTDATED: "holds another serial",
    DeployState.MISSING: "has not deployed it",
    DeployState.ERROR: "failed to deploy it",
}


def _worst(verdicts: list[tuple[Light, str]]) -> tuple[Light, tuple[str, ...]]:
    light = max((light for light, _ in verdicts), key=_LIGHT_ORDER.index, default=Light.GREEN)
    return light, tuple(reason for _, reason in verdicts)


def _credential(name: str, docs: _Docs, now: datetime, limits: Thresholds) -> CredentialStatus:
    request = docs.requests.get(name)
    state = docs.states.get(name)
    # Without its request nobody has access any more: every deploy document left is then "no-access".
    access = request.servers if request is not None else []
    hostnames = request.hostnames if request is not None else (state.hostnames if state is not None else [])
    serial = state.serial if state is not None else None
    deployments = _deployments(access, docs.deployments.get(name, {}), serial)
    light, reasons = _judge(state, request is not None, deployments, now, limits)
    return CredentialStatus(
        name=name,
        light=light,
        reasons=reasons,
        hostnames=tuple(hostnames),
        servers=tuple(access),
        status=None if state is None else state.status,
        status_message=None if state is None else state.status_message,
        serial=serial,
        not_after=None if state is None else state.not_after,
        next_renewal=None if state is None else state.next_renewal,
        requested=request is not None,
        deployments=deployments,
    )


def _server(server: Server, now: datetime, limits: Thresholds) -> ServerStatus:
    age = None if server.heartbeat is None else now - server.heartbeat
    return ServerStatus(
        name=server.name,
        enrolled=server.public_key is not None,
        stale=age is None or age > limits.stale_after,
        roles=tuple(server.roles),
        heartbeat=server.heartbeat,
        heartbeat_age=age,
        agent_version=server.agent_version,
        responder_url=server.responder_url,
    )


# --- JSON for scripts ---------------------------------------------------------------------------


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def _deployment_json(deployment: ServerDeployment) -> dict[str, Any]:
    return {
        "server": deployment.server,
        "state": deployment.state.value,
        "serial": deployment.serial,
        "deployed_at": _time(deployment.deployed_at),
        "error": deployment.error,
        "paths": list(deployment.paths),
        "live_check_ok": deployment.live_check_ok,
        "live_check_message": deployment.live_check_message,
    }


def _credential_json(credential: CredentialStatus) -> dict[str, Any]:
    return {
        "name": credential.name,
        "light": credential.light.value,
        "reasons": list(credential.reasons),
        "status": None if credential.status is None else credential.status.value,
        "status_message": credential.status_message,
        "requested": credential.requested,
        "hostnames": list(credential.hostnames),
        "servers": list(credential.servers),
        "serial": credential.serial,
        "not_after": _time(credential.not_after),
        "next_renewal": _time(credential.next_renewal),
        "deployments": [_deployment_json(deployment) for deployment in credential.deployments],
    }


def _server_json(server: ServerStatus) -> dict[str, Any]:
    return {
        "name": server.name,
        "enrolled": server.enrolled,
        "roles": list(server.roles),
        "heartbeat": _time(server.heartbeat),
        "heartbeat_age_seconds": None
        if server.heartbeat_age is None
        else round(server.heartbeat_age.total_seconds(), 3),
        "stale": server.stale,
        "agent_version": server.agent_version,
        "responder_url": server.responder_url,
    }


def to_json(status: FleetStatus) -> dict[str, Any]:
    """The status as plain JSON: stable keys, ISO-8601 UTC timestamps, null for absent values."""
    return {
        "now": format_timestamp(status.now),
        "summary": {light.value: status.count(light) for light in _LIGHT_ORDER},
        "credentials": [_credential_json(credential) for credential in status.credentials],
        "servers": [_server_json(server) for server in status.servers],
        "invalid": [{"id": item.doc_id, "message": item.message} for item in status.invalid],
    }
