"""A host's X25519 identity key pair on disk (mode 0600), its key id, and key rotation backups.

The private key lives in ``<state_dir>/hostkey.json``::

    {"version": 1, "type": "x25519", "key_id": "x25519:…", "public_key": "<b64>", "private_key": "<b64>"}

Rotation (``generate_host_key(..., overwrite=True)``) keeps the previous file next to it as
``hostkey.json.<UTC timestamp>`` so envelopes sealed to the old key can still be opened until the
certmgr has re-sealed them for the new one (see docs/sealing.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.utils
from nacl.public import PrivateKey, PublicKey

from store.errors import InvalidPublicKey, KeyFileError
from store.files import fsync_dir

KEY_FILE_NAME = "hostkey.json"
KEY_FILE_VERSION = 1
KEY_TYPE = "x25519"
KEY_ID_PREFIX = "x25519:"
_KEY_ID_HASH_BYTES = 16  # 128 bits of SHA-256: ids are unique in any fleet and still fit a log line
_BACKUP_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_BACKUP_NAME = re.compile(re.escape(KEY_FILE_NAME) + r"\.[0-9]{8}T[0-9]{6}\.[0-9]{6}Z")
_ENROLL_HINT = "run `certstore server enroll` to create one"


def decode_base64(text: str) -> bytes:
    """Decode standard base64 (with padding), accepting only the one canonical encoding of the bytes.

    Raises ``ValueError`` on anything else (whitespace, URL-safe alphabet, stray padding bits), so two
    different strings never stand for the same key or ciphertext.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def encode_base64(raw: bytes) -> str:
    """Standard base64 with padding: the encoding used in key files, server documents and envelopes."""
    return base64.b64encode(raw).decode("ascii")


def key_id(public_key: PublicKey | bytes) -> str:
    """The stable id of an X25519 public key: ``"x25519:"`` + the first 16 bytes of SHA-256 in hex."""
    raw = bytes(public_key)
    if len(raw) != PublicKey.SIZE:
        raise InvalidPublicKey(f"an X25519 public key is {PublicKey.SIZE} bytes, got {len(raw)}")
    return KEY_ID_PREFIX + hashlib.sha256(raw).digest()[:_KEY_ID_HASH_BYTES].hex()


def public_key_from_b64(text: str, *, field: str = "public_key") -> PublicKey:
    """Parse a base64 X25519 public key as found in a ``server:`` document.

    Raises InvalidPublicKey (a ValidationError and a SealingError) for bad base64, a length other than
    32 bytes, or a low-order point (nothing could be sealed to it). ``field`` is reported on the error.
    """
    if not isinstance(text, str):
        raise InvalidPublicKey("an X25519 public key must be a base64 string", field=field)
    try:
        raw = decode_base64(text)
    except ValueError as exc:
        raise InvalidPublicKey(f"the X25519 public key is {exc}", field=field) from None
    if len(raw) != PublicKey.SIZE:
        raise InvalidPublicKey(
            f"an X25519 public key is {PublicKey.SIZE} bytes, this one decodes to {len(raw)}", field=field
        )
    try:
        # libsodium refuses a shared secret of all zeros, which is what every low-order point yields;
        # finding that out here gives one clear message instead of a failure while sealing.
        nacl.bindings.crypto_scalarmult(nacl.utils.random(PrivateKey.SIZE), raw)
    except nacl.exceptions.CryptoError:
        raise InvalidPublicKey("the X25519 public key is a low-order point", field=field) from None
    return PublicKey(raw)


class HostKey:
    """A host's X25519 key pair. ``repr``/``str`` show only the key id, never the private key."""

    __slots__ = ("_key_id", "_private_key")

    def __init__(self, private_key: PrivateKey) -> None:
        self._private_key = private_key
        self._key_id = key_id(private_key.public_key)

    @property
    def private_key(self) -> PrivateKey:
        return self._private_key

    @property
    def public_key(self) -> PublicKey:
        return self._private_key.public_key

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key_b64(self) -> str:
        return encode_base64(bytes(self.public_key))

    def __repr__(self) -> str:
        return f"HostKey(key_id={self._key_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostKey):
            return NotImplemented
        return self._key_id == other._key_id

    def __hash__(self) -> int:
        return hash(self._key_id)


def key_file_path(state_dir: Path) -> Path:
    """Where the current host key lives."""
    return state_dir / KEY_FILE_NAME


def generate_host_key(state_dir: Path, *, overwrite: bool = False) -> HostKey:
    """Create a new host key in ``state_dir`` (created 0700 if missing); the key file is written 0600.

    Without ``overwrite`` an existing key is never replaced (KeyFileError). With it (rotation) the old
    file is kept as ``hostkey.json.<UTC timestamp>`` (0600, see ``load_previous_keys``). A crash at
    any point leaves either the old key or the new one in place, never a partial file.
    """
    _ensure_state_dir(state_dir)
    path = key_file_path(state_dir)
    host_key = HostKey(PrivateKey.generate())
    tmp = _write_temp_file(state_dir, _serialize(host_key))
    try:
        if overwrite:
            _back_up(path)
            os.replace(tmp, path)
        else:
            try:
                # link() fails if the name exists: a no-clobber rename, race-free against a second enroll
                os.link(tmp, path)
            except FileExistsError:
                raise KeyFileError(
                    f"a host key already exists at {path}; refusing to overwrite it "
                    "(rotate the key instead, which keeps the old one as a backup)"
                ) from None
            os.unlink(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(state_dir)
    return host_key


def load_host_key(state_dir: Path) -> HostKey:
    """Load the current host key; KeyFileError if missing, unsafe (group/other access) or malformed."""
    return _load_key_file(key_file_path(state_dir))


def load_previous_keys(state_dir: Path) -> list[HostKey]:
    """The keys this host rotated away from, newest first (empty when it never rotated).

    Used to open envelopes still sealed only to an old key while the certmgr catches up.
    """
    backups = sorted(
        (path for path in state_dir.glob(KEY_FILE_NAME + ".*") if _BACKUP_NAME.fullmatch(path.name)),
        key=lambda path: path.name,  # the timestamp format sorts chronologically as text
        reverse=True,
    )
    return [_load_key_file(path) for path in backups]


# --- file handling -----------------------------------------------------------------------------


def _serialize(host_key: HostKey) -> bytes:
    document = {
        "version": KEY_FILE_VERSION,
        "type": KEY_TYPE,
        "key_id": host_key.key_id,
        "public_key": host_key.public_key_b64,
        "private_key": encode_base64(bytes(host_key.private_key)),
    }
    return (json.dumps(document, indent=2) + "\n").encode("ascii")


def _parse(path: Path, data: bytes) -> HostKey:
    """Parse a key file; error messages name the path and the problem, never the content."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyFileError(f"{path} is not a certstore host key file (not JSON); {_ENROLL_HINT}") from None
    if not isinstance(document, Mapping):
        raise KeyFileError(f"{path} is not a certstore host key file (not a JSON object)")
    version = document.get("version")
    if type(version) is not int or version != KEY_FILE_VERSION:
        raise KeyFileError(
            f"{path} has key file version {version!r}; this certstore reads version {KEY_FILE_VERSION}"
        )
    if document.get("type") != KEY_TYPE:
        raise KeyFileError(f"{path} holds a key of type {document.get('type')!r}, expected {KEY_TYPE!r}")
    private_b64 = document.get("private_key")
    try:
        if not isinstance(private_b64, str):
            raise ValueError("missing")
        raw = decode_base64(private_b64)
        if len(raw) != PrivateKey.SIZE:
            raise ValueError("wrong length")
    except ValueError as exc:
        raise KeyFileError(f"{path}: the private key field is malformed ({exc})") from None
    host_key = HostKey(PrivateKey(raw))
    # The stored id and public key are for people reading the file; a mismatch means it was edited.
    if document.get("key_id") != host_key.key_id or document.get("public_key") != host_key.public_key_b64:
        raise KeyFileError(f"{path}: key_id/public_key do not match the private key; the file was altered")
    return host_key


def _load_key_file(path: Path) -> HostKey:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(f"no host key at {path}; {_ENROLL_HINT}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # the mode of what was opened, not of whatever the name points to later
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"a host's private key must be private to it: run `chmod 600 {path}`"
            )
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            data = handle.read()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    return _parse(path, data)


def _ensure_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not state_dir.is_dir():
            raise KeyFileError(f"{state_dir} exists and is not a directory") from None
        return  # an existing directory keeps the mode its owner chose; the key file is 0600 anyway
    os.chmod(state_dir, 0o700)  # mkdir's mode is filtered by the umask; make sure


def _write_temp_file(directory: Path, data: bytes) -> Path:
    """Write ``data`` to a new 0600 file in ``directory`` (same filesystem as the target), fsynced."""
    tmp = directory / f".{KEY_FILE_NAME}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _back_up(path: Path) -> None:
    """Keep the current key file under a timestamped name (a hard link: atomic, no copy of the secret)."""
    if not path.exists():
        return
    backup = path.with_name(f"{KEY_FILE_NAME}.{datetime.now(UTC).strftime(_BACKUP_TIME_FORMAT)}")
    try:
        os.link(path, backup)
    except FileExistsError:
        raise KeyFileError(f"backup {backup} already exists; not rotating twice in one microsecond") from None
    os.chmod(backup, 0o600)
