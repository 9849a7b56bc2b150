"""Continuous replication between the hub and a server's replica, as ``_replicator`` documents.

A pair is two documents on one server's ``_replicator`` database (the replica's, by default, so each
server pulls its own copy): hub → replica and replica → hub. Both carry the credentials of the
other side in their URLs, which is why ``_replicator`` must stay admin-only (it is on CouchDB 3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from store import ids
from store.couch import CouchClient, Database, JSONDict, ServerURL, redact
from store.errors import CertstoreError, Forbidden, NotFound, ValidationError
from store.ids import replication_doc_id, replication_name
from store.names import check_name

REPLICATOR_DB = "_replicator"


@dataclass(frozen=True)
class Endpoint:
    """One side of a replication: a server URL (credentials allowed) and a database name."""

    server: str
    db: str

    def url(self) -> str:
        """The database URL with credentials, as a replicator needs it."""
        return ServerURL.parse(self.server).with_credentials() + "/" + self.db

    def shown(self) -> str:
        """The database URL with the password hidden."""
        return redact(self.url())


@dataclass(frozen=True)
class Replication:
    """One ``_replicator`` document certstore manages, as ``replicate list`` shows it."""

    doc_id: str
    name: str
    direction: str
    source: str
    target: str
    state: str


def default_name(hub: Endpoint, replica: Endpoint) -> str:
    """A stable name for a hub/replica pair when the admin gives none."""
    digest = hashlib.sha256(
        f"{ServerURL.parse(hub.server).url}/{hub.db}|"
        f"{ServerURL.parse(replica.server).url}/{replica.db}".encode()
    ).hexdigest()
    return "r" + digest[:12]


#: The design document's filter that keeps a server's replica to what that server needs.
REPLICA_FILTER = "certstore/replica"
#: The one that sends back to the hub only what that server writes (its ``server:`` and ``deploy:``).
OWN_FILTER = "certstore/own"

#: Milliseconds between checkpoint writes (CouchDB's ``checkpoint_interval``; its default too).
#: pouchdb-server (patched, see node/patches) honours it as well instead of writing a checkpoint
#: after every batch: a GET and a PUT of a ``_local`` document per replicated change, two for the
#: document and two for its echo on the way back, were a third of a replica node's requests.
#: A restart replays at most this much of the feed; revs_diff makes that cheap.
CHECKPOINT_INTERVAL_MS = 30000


def add(
    client: CouchClient,
    hub: Endpoint,
    replica: Endpoint,
    name: str | None = None,
    *,
    server: str | None = None,
    push_all: bool = False,
) -> list[str]:
    """Write (or refresh) the pull and push documents on ``client``'s ``_replicator``; return ids.

    With ``server`` the replica is that server's: the other servers' ``server:`` and ``deploy:``
    documents stay on the hub (the ``certstore/replica`` filter), so a fleet of N servers moves N,
    not N x N, reports; and only that server's own ``server:`` and ``deploy:`` documents go back
    (``certstore/own``: the rest came from the hub, and the server's user may write nothing else
    there), unless ``push_all`` (a replica the certmgr or admins write to). Without ``server`` the
    replica is a full copy (a standby hub, say).
    """
    pair_name = replication_name(name) if name else default_name(hub, replica)
    if server is not None and ServerURL.parse(replica.server).url == client.url:
        _check_filters(client.db(replica.db))
    replicator = client.db(REPLICATOR_DB)
    replicator.create(exist_ok=True)
    written = []
    for direction, source, target in (("pull", hub, replica), ("push", replica, hub)):
        doc_id = replication_doc_id(pair_name, direction)
        doc: JSONDict = {
            "_id": doc_id,
            "source": source.url(),
            "target": target.url(),
            "continuous": True,
            "create_target": False,
            "checkpoint_interval": CHECKPOINT_INTERVAL_MS,
            "certstore": {"name": pair_name, "direction": direction},
        }
        if server is not None and (direction == "pull" or not push_all):
            doc["filter"] = REPLICA_FILTER if direction == "pull" else OWN_FILTER
            doc["query_params"] = {"server": check_name(server)}
        if server is not None:
            # pouchdb-server checkpoints on both sides after every batch; keep the hub's checkpoint
            # writes off it (the replica side holds them). CouchDB 3 ignores the field.
            doc["checkpoint"] = "target" if direction == "pull" else "source"
        existing = replicator.get_or_none(doc_id)
        if existing is not None:
            if all(
                existing.get(k) == doc.get(k)
                for k in (
                    "source",
                    "target",
                    "continuous",
                    "filter",
                    "query_params",
                    "checkpoint",
                    "checkpoint_interval",
                )
            ):
                written.append(doc_id)
                continue
            # A changed endpoint (new credentials, say): replace the document. CouchDB restarts the
            # job on update; pouchdb-server refuses to update a triggered one, so delete it first there.
            doc["_rev"] = existing["_rev"]
            try:
                replicator.put(doc)
            except Forbidden:
                replicator.delete(doc_id, existing["_rev"])
                del doc["_rev"]
                replicator.put(doc)
        else:
            replicator.put(doc)
        written.append(doc_id)
    return written


def _check_filters(db: Database) -> None:
    """Refuse to set up filtered replication of a replica whose design document lacks the filters
    (the replication would fail on the server with no one watching)."""
    design = db.get_or_none(ids.DESIGN)
    filters = (design or {}).get("filters") or {}
    missing = [f for f in (REPLICA_FILTER, OWN_FILTER) if f.split("/", 1)[1] not in filters]
    if missing:
        raise CertstoreError(
            f"{db.url} lacks the design document's filter(s) {', '.join(missing)}: run "
            f"`certstore init` on the replica first (--url its server, --db {db.name})"
        )


def _state(doc: JSONDict) -> str:
    state = doc.get("_replication_state")
    return str(state) if state else "scheduled"


def list_replications(client: CouchClient) -> list[Replication]:
    """The replications certstore wrote on ``client``'s ``_replicator``, passwords hidden."""
    replicator = client.db(REPLICATOR_DB)
    try:
        rows = replicator.all_docs(include_docs=True)["rows"]
    except NotFound:
        return []
    found = []
    for row in rows:
        doc: dict[str, Any] = row.get("doc") or {}
        meta = doc.get("certstore")
        if not isinstance(meta, dict):
            continue
        found.append(
            Replication(
                doc_id=str(doc["_id"]),
                name=str(meta.get("name", "")),
                direction=str(meta.get("direction", "")),
                source=redact(str(doc.get("source", ""))),
                target=redact(str(doc.get("target", ""))),
                state=_state(doc),
            )
        )
    return found


def remove(client: CouchClient, name: str) -> list[str]:
    """Delete both documents of the pair ``name``; returns the ids removed."""
    replicator = client.db(REPLICATOR_DB)
    removed = []
    for direction in ("pull", "push"):
        doc_id = replication_doc_id(replication_name(name), direction)
        doc = replicator.get_or_none(doc_id)
        if doc is not None:
            replicator.delete(doc_id, doc["_rev"])
            removed.append(doc_id)
    if not removed:
        raise ValidationError(
            f"no replication named {name!r} on {client.url} (see `certstore replicate list`)"
        )
    return removed
