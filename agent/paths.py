"""Every path the agent writes, built and checked in one place.

Layout under the data directory (services point at ``live/<keyfile>/<file>``)::

    <data_dir>/versions/<keyfile>/<serial>-<token>/{cert.pem,chain.pem,...,meta.json}
    <data_dir>/versions/<keyfile>/.tmp-<serial>-<token>/    a version being written (never live)
    <data_dir>/live/<keyfile> -> ../versions/<keyfile>/<serial>-<token>   (symlink, switched atomically)
    <data_dir>/live/.<keyfile>.tmp-<token>                  a symlink about to replace the live one

and under the state directory: ``agent-checkpoint.json`` and ``agent-status.json``.

Each name that comes from a document (keyfile, serial) is checked here a second time, whatever the
document model already said: the database is shared with other writers, and a replica may hold a
document that never went through ``validate_doc_update``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.errors import UnsafePath
from store.names import keyfile_problem, show

#: The keyring files of one version, in the order they are written; ``meta.json`` is written last.
CERT_FILE: Final = "cert.pem"
CHAIN_FILE: Final = "chain.pem"
FULLCHAIN_FILE: Final = "fullchain.pem"
PRIVKEY_FILE: Final = "privkey.pem"
COMBINED_FILE: Final = "combined.pem"
P12_FILE: Final = "keyring.p12"
META_FILE: Final = "meta.json"
KEYRING_FILES: Final = (
    CERT_FILE,
    CHAIN_FILE,
    FULLCHAIN_FILE,
    PRIVKEY_FILE,
    COMBINED_FILE,
    P12_FILE,
    META_FILE,
)
#: Files holding the private key: written 0600, everything else 0644.
SECRET_FILES: Final = frozenset({PRIVKEY_FILE, COMBINED_FILE, P12_FILE})

VERSIONS_DIR: Final = "versions"
LIVE_DIR: Final = "live"
TMP_PREFIX: Final = ".tmp-"
CHECKPOINT_FILE: Final = "agent-checkpoint.json"
STATUS_FILE: Final = "agent-status.json"

# A path component we build ourselves: ASCII letters, digits, dot, dash, underscore; no leading dot.
_COMPONENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SERIAL_RE = re.compile(r"[0-9a-f]{1,40}")
_TOKEN_RE = re.compile(r"[0-9a-f]{4,32}")
_VERSION_RE = re.compile(r"([0-9a-f]{1,40})-([0-9a-f]{4,32})")


def _refuse(what: str, value: object, why: str) -> UnsafePath:
    shown = show(value) if isinstance(value, str) else type(value).__name__
    return UnsafePath(f"unsafe {what} {shown}: {why}", value=str(value)[:200])


def check_component(value: object, what: str = "path component") -> str:
    """Return ``value`` if it is a single safe path component, else raise :class:`UnsafePath`."""
    if not isinstance(value, str):
        raise _refuse(what, value, "must be a string")
    if "\x00" in value:
        raise _refuse(what, value, "contains a NUL byte")
    if "/" in value or "\\" in value:
        raise _refuse(what, value, "contains a path separator")
    if ".." in value:
        raise _refuse(what, value, 'contains ".."')
    if _COMPONENT_RE.fullmatch(value) is None:
        raise _refuse(
            what,
            value,
            "must be 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return value


def check_keyfile(value: object) -> str:
    """A keyfile name as the document model accepts it *and* safe as one path component."""
    name = check_component(value, "keyfile name")
    problem = keyfile_problem(name)
    if problem is not None:
        raise _refuse("keyfile name", name, problem)
    return name


def check_serial(value: object) -> str:
    """A certificate serial as used in version directory names: lowercase hex, at most 40 digits."""
    if not isinstance(value, str) or _SERIAL_RE.fullmatch(value) is None:
        raise _refuse("serial", value, "must be 1-40 lowercase hex digits")
    return value


def check_token(value: object) -> str:
    """The random part of a version or temp name: 4-32 lowercase hex digits."""
    if not isinstance(value, str) or _TOKEN_RE.fullmatch(value) is None:
        raise _refuse("token", value, "must be 4-32 lowercase hex digits")
    return value


def is_version_name(name: str) -> bool:
    """True for a complete version directory name ``<serial>-<token>`` (not a temp one)."""
    return _VERSION_RE.fullmatch(name) is not None


@dataclass(frozen=True)
class AgentPaths:
    """The agent's directories; every method checks the names it is given."""

    data_dir: Path
    state_dir: Path

    @classmethod
    def create(cls, data_dir: Path, state_dir: Path) -> AgentPaths:
        """Absolute, normalised directories (symlinks in them are the admin's choice and kept)."""
        return cls(Path(data_dir).absolute(), Path(state_dir).absolute())

    @property
    def versions_root(self) -> Path:
        return self.data_dir / VERSIONS_DIR

    @property
    def live_root(self) -> Path:
        return self.data_dir / LIVE_DIR

    def versions_dir(self, keyfile: str) -> Path:
        """``versions/<keyfile>``: every version of one keyring."""
        return self.versions_root / check_keyfile(keyfile)

    def version_dir(self, keyfile: str, serial: str, token: str) -> Path:
        """``versions/<keyfile>/<serial>-<token>``: one complete version."""
        return self.versions_dir(keyfile) / f"{check_serial(serial)}-{check_token(token)}"

    def temp_version_dir(self, keyfile: str, serial: str, token: str) -> Path:
        """Where a version is written before it is renamed into place."""
        return self.versions_dir(keyfile) / f"{TMP_PREFIX}{check_serial(serial)}-{check_token(token)}"

    def live_link(self, keyfile: str) -> Path:
        """``live/<keyfile>``: the symlink services read through."""
        return self.live_root / check_keyfile(keyfile)

    def temp_live_link(self, keyfile: str, token: str) -> Path:
        """A symlink made next to the live one and then renamed over it."""
        return self.live_root / f".{check_keyfile(keyfile)}{TMP_PREFIX}{check_token(token)}"

    def link_target(self, keyfile: str, version: Path) -> str:
        """The relative target of ``live/<keyfile>`` for ``version`` (the data dir may be moved)."""
        name = version.name
        if not is_version_name(name) or version.parent != self.versions_dir(keyfile):
            raise _refuse("version directory", str(version), f"is not a version of {keyfile}")
        return f"../{VERSIONS_DIR}/{keyfile}/{name}"

    def live_file(self, keyfile: str, filename: str) -> Path:
        """``live/<keyfile>/<filename>``: the stable path a service is configured with."""
        if filename not in KEYRING_FILES:
            raise _refuse("keyring file", filename, f"must be one of {', '.join(KEYRING_FILES)}")
        return self.live_link(keyfile) / filename

    def live_paths(self, keyfile: str) -> list[str]:
        """The stable paths of every keyring file of ``keyfile`` (what the ``deploy:`` doc lists)."""
        return [str(self.live_file(keyfile, name)) for name in KEYRING_FILES]

    @property
    def checkpoint_file(self) -> Path:
        return self.state_dir / CHECKPOINT_FILE

    @property
    def status_file(self) -> Path:
        return self.state_dir / STATUS_FILE
