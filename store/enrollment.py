"""Server identity in the database: enrolling a host's public key, rotating it, and server users.

A host's X25519 private key stays in its state directory (``store/hostkey.py``); only the public key
and its key id are published on ``server:<name>``. Enrolling is idempotent; a different published
key is never replaced silently, because every credential sealed for the old key would stop opening
on the host that holds it. Rotation is its own explicit command.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from store import ids
from store.couch import CouchClient, Database
from store.documents import Server
from store.errors import Conflict, EnrollmentConflict, KeyFileError
from store.hostkey import HostKey, generate_host_key, key_file_path, load_host_key
from store.provision import ROLE_CERTMGR, ROLE_SERVER

#: The role a server document carries when its host runs the certmgr (secrets are sealed for it).
CERTMGR_ROLE = "certmgr"


def server_role(name: str) -> str:
    """The CouchDB role that lets a server's user write its own ``server:`` and ``deploy:`` docs."""
    return f"server:{ids.parse(ids.server_id(name)).name}"


def server_user(name: str) -> str:
    """The CouchDB user name of server ``name``."""
    return f"server-{ids.parse(ids.server_id(name)).name}"


Action = Literal["published", "unchanged", "key-added", "roles-added", "rotated"]


@dataclass(frozen=True)
class EnrollResult:
    """What enrolling did: ``published`` (new doc), ``key-added`` (an admin's doc got the key),
    ``roles-added`` (already enrolled, new roles), ``unchanged`` (nothing to do) or ``rotated``."""

    name: str
    key_id: str
    action: Action
    key_file: Path
    previous_key_id: str | None = None


def _local_key(state_dir: Path) -> HostKey | None:
    if not key_file_path(state_dir).exists():
        return None
    return load_host_key(state_dir)


def enroll(db: Database, name: str, state_dir: Path, *, roles: Sequence[str] = ()) -> EnrollResult:
    """Publish this host's public key as ``server:<name>``, generating the key pair if needed.

    ``roles`` (e.g. ``certmgr``) are added to the document's roles; existing roles are kept.
    """
    doc_id = ids.server_id(name)
    stored = db.get_or_none(doc_id)
    server = Server.from_doc(stored) if stored is not None else None
    local = _local_key(state_dir)
    published = server.key_id if server is not None else None
    if published is not None and (local is None or local.key_id != published):
        this = f"this host's key is {local.key_id}" if local else f"this host has no key in {state_dir}"
        raise EnrollmentConflict(
            f"{doc_id} is already enrolled with key {published}, and {this}. Another host may be using "
            f"the name {name!r}, or this host was reinstalled. If this host really is {name!r}, replace the "
            f"published key with `certstore server rotate-key {name}` (credentials sealed for the old key "
            "are then re-keyed).",
            name=name,
            published_key_id=published,
        )
    key = local or generate_host_key(state_dir)
    missing_roles = [role for role in roles if server is None or role not in server.roles]
    if server is not None and published == key.key_id:
        if not missing_roles:
            return EnrollResult(name, key.key_id, "unchanged", key_file_path(state_dir))
        _publish(db, name, key, server, missing_roles)
        return EnrollResult(name, key.key_id, "roles-added", key_file_path(state_dir))
    _publish(db, name, key, server, missing_roles)
    action: Action = "published" if server is None else "key-added"
    return EnrollResult(name, key.key_id, action, key_file_path(state_dir))


def rotate_key(db: Database, name: str, state_dir: Path) -> EnrollResult:
    """Make a new key pair for this host (the old one is kept as a backup) and publish it."""
    doc_id = ids.server_id(name)
    stored = db.get_or_none(doc_id)
    server = Server.from_doc(stored) if stored is not None else None
    try:
        old = _local_key(state_dir)
    except KeyFileError:
        old = None  # an unreadable old key is one more reason to rotate
    previous = (server.key_id if server is not None else None) or (old.key_id if old else None)
    key = generate_host_key(state_dir, overwrite=True)
    _publish(db, name, key, server)
    return EnrollResult(name, key.key_id, "rotated", key_file_path(state_dir), previous_key_id=previous)


def _publish(
    db: Database, name: str, key: HostKey, server: Server | None, add_roles: Sequence[str] = ()
) -> None:
    model = server or Server(name=name)
    model.roles = [*model.roles, *(role for role in add_roles if role not in model.roles)]
    model.public_key = key.public_key_b64
    model.key_id = key.key_id
    try:
        db.put(model.validated().to_doc())
    except Conflict:
        raise EnrollmentConflict(
            f"{ids.server_id(name)} changed while enrolling (someone else wrote it): run the command again",
            name=name,
            published_key_id=None,
        ) from None


@dataclass(frozen=True)
class ServerCredentials:
    """A server's CouchDB login; the password is shown once and stored nowhere by certstore."""

    name: str
    user: str
    password: str
    roles: tuple[str, ...]


def create_server_user(
    client: CouchClient, name: str, *, reset: bool = False, certmgr: bool = False
) -> ServerCredentials:
    """Create the CouchDB user for server ``name`` with a fresh random password.

    Refuses to touch an existing user unless ``reset`` (which gives it a new password). ``certmgr``
    adds the role that lets this server's user write what the certmgr writes.
    """
    user = server_user(name)
    roles = (ROLE_SERVER, server_role(name), *((ROLE_CERTMGR,) if certmgr else ()))
    existing = client.db("_users").get_or_none(f"org.couchdb.user:{user}")
    if existing is not None and not reset:
        raise EnrollmentConflict(
            f"the CouchDB user {user!r} already exists; pass --reset-password to give it a new password "
            "(the old one stops working)",
            name=name,
            published_key_id=None,
        )
    password = secrets.token_urlsafe(24)
    client.put_user(user, password, roles)
    return ServerCredentials(name=name, user=user, password=password, roles=roles)
