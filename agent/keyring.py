"""Keyring files on disk: write a complete version, switch to it atomically, roll back, prune, verify.

A version is written into a temp directory (every file fsynced), the directory fsynced and renamed to
``<serial>-<token>``, and only then is ``live/<keyfile>`` pointed at it: a new symlink is made next to
the live one and renamed over it (``rename`` is atomic), and the ``live`` directory is fsynced. A crash
at any instant therefore leaves ``live/<keyfile>`` on the old complete version or the new complete
version; leftovers (temp directories, temp links) are removed by :meth:`Keyring.clean_partial`.

``meta.json`` records the SHA-256 of every other file, so drift (a file changed or deleted by hand) is
found without keeping key material around. Private keys are written only into the keyring files, 0600.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from agent.keys import load_private_key
from agent.paths import (
    CERT_FILE,
    CHAIN_FILE,
    COMBINED_FILE,
    FULLCHAIN_FILE,
    KEYRING_FILES,
    META_FILE,
    P12_FILE,
    PRIVKEY_FILE,
    SECRET_FILES,
    TMP_PREFIX,
    AgentPaths,
    check_keyfile,
    is_version_name,
)
from store.files import fsync_dir, sync_filesystem
from store.names import format_timestamp

log = logging.getLogger(__name__)

#: Called with a step name before each step of :meth:`Keyring.install`; tests raise from it to simulate
#: a crash at that instant.
FaultHook = Callable[[str], None]


@dataclass(frozen=True)
class KeyMaterial:
    """A checked key and chain, ready to write; ``repr`` never shows the key."""

    credential: str
    key_pem: bytes
    chain: tuple[bytes, ...]  # leaf first, then intermediates, each one PEM block
    serial: str
    names: tuple[str, ...]
    not_after: datetime
    fingerprint_sha256: str

    def __repr__(self) -> str:
        return f"KeyMaterial({self.credential}, serial={self.serial}, key=<hidden>)"


@dataclass(frozen=True)
class StagedVersion:
    """A version written into its temp directory by :meth:`Keyring.stage`, waiting for a commit."""

    keyfile: str
    temp: Path
    final: Path
    meta: dict[str, Any]  # what its meta.json holds


@dataclass(frozen=True)
class FileOwner:
    """Who owns the keyring files (applied only when running as root and configured)."""

    uid: int | None = None
    gid: int | None = None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def render(material: KeyMaterial, p12_password: bytes | None) -> dict[str, bytes]:
    """The contents of every keyring file of one version, ``meta.json`` included."""
    cert = material.chain[0]
    chain = b"".join(material.chain[1:])
    fullchain = cert + chain
    key = load_private_key(material.key_pem)
    x509_cert = x509.load_pem_x509_certificate(cert)
    cas = [x509.load_pem_x509_certificate(pem) for pem in material.chain[1:]]
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(p12_password) if p12_password else serialization.NoEncryption()
    )
    p12 = pkcs12.serialize_key_and_certificates(
        material.credential.encode(), key, x509_cert, cas or None, encryption
    )
    files = {
        CERT_FILE: cert,
        CHAIN_FILE: chain,
        FULLCHAIN_FILE: fullchain,
        PRIVKEY_FILE: material.key_pem,
        COMBINED_FILE: material.key_pem + fullchain,
        P12_FILE: p12,
    }
    meta = {
        "credential": material.credential,
        "serial": material.serial,
        "names": list(material.names),
        "not_after": format_timestamp(material.not_after),
        "fingerprint_sha256": material.fingerprint_sha256,
        "deployed_at": format_timestamp(datetime.now(UTC)),
        "files": {name: _sha256(data) for name, data in files.items()},
    }
    files[META_FILE] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    return files


def read_meta(version: Path) -> dict[str, Any] | None:
    """The ``meta.json`` of a version directory, or None if missing or unreadable."""
    try:
        data = json.loads((version / META_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def version_problems(version: Path, expected_meta: Mapping[str, Any] | None = None) -> list[str]:
    """What is wrong with a version directory: missing files, files whose hash differs from meta.json.

    ``expected_meta`` (what the agent wrote, kept in memory) guards against a hand-edited meta.json.
    """
    meta = read_meta(version)
    if meta is None:
        return [f"{META_FILE} is missing or unreadable"]
    if expected_meta is not None and meta.get("files") != expected_meta.get("files"):
        return [f"{META_FILE} was changed"]
    hashes = meta.get("files")
    if not isinstance(hashes, dict):
        return [f"{META_FILE} has no file list"]
    problems = []
    for name in KEYRING_FILES:
        if name == META_FILE:
            continue
        try:
            data = (version / name).read_bytes()
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        except OSError as exc:
            problems.append(f"{name} is unreadable: {exc.strerror}")
            continue
        if _sha256(data) != hashes.get(name):
            problems.append(f"{name} was changed")
    return problems


class Keyring:
    """The versions and live links under one data directory."""

    def __init__(
        self,
        paths: AgentPaths,
        *,
        owner: FileOwner | None = None,
        p12_password: bytes | None = None,
        keep_versions: int = 2,
        fault: FaultHook | None = None,
    ) -> None:
        self.paths = paths
        self.owner = owner or FileOwner()
        self.p12_password = p12_password
        self.keep_versions = max(1, keep_versions)
        self._fault = fault or (lambda step: None)

    # -- reading ------------------------------------------------------------------------------

    def current(self, keyfile: str) -> Path | None:
        """The version directory ``live/<keyfile>`` points at, or None when there is no live link."""
        link = self.paths.live_link(keyfile)
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        name = target.rpartition("/")[2]
        if is_version_name(name):
            made = self.paths.versions_dir(keyfile) / name
            if target == self.paths.link_target(keyfile, made):
                return made  # the link exactly as switch() makes it: no need to resolve the path
        version = (link.parent / target).resolve(strict=False)
        expected = self.paths.versions_dir(keyfile).resolve(strict=False)
        if version.parent != expected or not is_version_name(version.name):
            return None  # a link someone pointed elsewhere by hand: treat as drift
        return self.paths.versions_dir(keyfile) / version.name

    def live_keyfiles(self) -> list[str]:
        """Keyfile names that have a live link."""
        try:
            entries = sorted(os.listdir(self.paths.live_root))
        except FileNotFoundError:
            return []
        return [name for name in entries if not name.startswith(".")]

    def versions(self, keyfile: str) -> list[Path]:
        """Complete version directories of ``keyfile``, oldest first (by modification time)."""
        directory = self.paths.versions_dir(keyfile)
        try:
            found = [directory / name for name in os.listdir(directory) if is_version_name(name)]
        except FileNotFoundError:
            return []
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))

    # -- writing ------------------------------------------------------------------------------

    def _ensure_dirs(self, keyfile: str) -> None:
        directory = self.paths.versions_dir(keyfile)
        try:
            directory.mkdir(mode=0o755, exist_ok=True)
        except FileNotFoundError:  # the first version, or the data directory was removed by hand
            for root in (self.paths.data_dir, self.paths.versions_root, self.paths.live_root):
                root.mkdir(mode=0o755, parents=True, exist_ok=True)
            directory.mkdir(mode=0o755, exist_ok=True)

    def _chown(self, path: Path) -> None:
        if (self.owner.uid is None and self.owner.gid is None) or os.geteuid() != 0:
            return
        os.chown(
            path,
            -1 if self.owner.uid is None else self.owner.uid,
            -1 if self.owner.gid is None else self.owner.gid,
            follow_symlinks=False,
        )

    def _write_file(self, path: Path, data: bytes, mode: int) -> int:
        """Create and fill ``path``; returns the open descriptor (the caller fsyncs and closes it)."""
        # O_EXCL on a fresh temp directory: nothing can have planted a file or link there first.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not loosen or tighten what we ask for
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            raise
        self._chown(path)
        return fd

    def _write_temp(self, keyfile: str, material: KeyMaterial, *, durable: bool) -> StagedVersion:
        """Write every file of a version into its temp directory; fsynced only when ``durable``."""
        check_keyfile(keyfile)
        self._ensure_dirs(keyfile)
        token = secrets.token_hex(4)
        files = render(material, self.p12_password)
        staged = StagedVersion(
            keyfile,
            self.paths.temp_version_dir(keyfile, material.serial, token),
            self.paths.version_dir(keyfile, material.serial, token),
            json.loads(files[META_FILE]),
        )
        staged.temp.mkdir(mode=0o755)
        fds: list[int] = []
        try:
            self._chown(staged.temp)
            for name in KEYRING_FILES:
                self._fault(f"write:{name}")
                mode = 0o600 if name in SECRET_FILES else 0o644
                fds.append(self._write_file(staged.temp / name, files[name], mode))
            if durable:
                # fsync after all writes: the first flush commits most of the others' data with it,
                # which makes a version about twice as fast to write as fsyncing each file in turn.
                for fd in fds:
                    os.fsync(fd)
                fsync_dir(staged.temp)
        except OSError:
            # Disk full, a read-only mount: nothing of this version may linger (other versions may be
            # staged next to it, so this is not left to clean_partial).
            shutil.rmtree(staged.temp, ignore_errors=True)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        return staged

    def write_version(self, keyfile: str, material: KeyMaterial) -> Path:
        """Write a complete, fsynced version directory and return it (not yet live)."""
        staged = self._write_temp(keyfile, material, durable=True)
        self._fault("rename-version")
        os.rename(staged.temp, staged.final)
        fsync_dir(staged.final.parent)
        return staged.final

    def stage(self, keyfile: str, material: KeyMaterial) -> StagedVersion:
        """Write a version into its temp directory, not yet durable: :meth:`commit` finishes a batch."""
        return self._write_temp(keyfile, material, durable=False)

    def commit(self, batch: Sequence[StagedVersion]) -> list[tuple[Path, Path | None] | OSError]:
        """Make staged versions durable and live, with a few filesystem syncs for the whole batch.

        The order keeps :meth:`install`'s guarantee for every keyfile: (1) one sync makes every
        staged file durable; (2) the temp directories are renamed to their final names and (3) a
        second sync makes the renames durable, so a version directory with a final name is always
        complete; (4) the live links are switched and (5) ``live/`` is fsynced once. A crash before
        (4) leaves every live link where it was; during (4), each link on its old or its new complete
        version. Returns ``(new_version, previous_version)`` per entry, or the error that stopped it
        (that keyfile's live link is then unchanged).
        """
        results: list[tuple[Path, Path | None] | OSError] = []
        if not batch:
            return results
        sync_filesystem(self.paths.data_dir)
        renamed: list[StagedVersion | OSError] = []
        for staged in batch:
            self._fault("rename-version")
            try:
                os.rename(staged.temp, staged.final)
            except OSError as exc:
                shutil.rmtree(staged.temp, ignore_errors=True)
                renamed.append(exc)
            else:
                renamed.append(staged)
        sync_filesystem(self.paths.data_dir)
        for entry in renamed:
            if isinstance(entry, OSError):
                results.append(entry)
                continue
            try:
                results.append((entry.final, self.switch(entry.keyfile, entry.final, durable=False)))
            except OSError as exc:
                results.append(exc)
        self._fault("fsync-live")
        fsync_dir(self.paths.live_root)
        return results

    def switch(self, keyfile: str, version: Path, *, durable: bool = True) -> Path | None:
        """Point ``live/<keyfile>`` at ``version`` atomically; returns the version it pointed at before.

        ``durable=False`` leaves the fsync of ``live/`` to the caller (:meth:`commit`, once per batch).
        """
        previous = self.current(keyfile)
        target = self.paths.link_target(keyfile, version)
        temp = self.paths.temp_live_link(keyfile, secrets.token_hex(4))
        self.paths.live_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._fault("symlink")
        os.symlink(target, temp)
        self._chown(temp)
        self._fault("replace-link")
        os.replace(temp, self.paths.live_link(keyfile))
        if durable:
            self._fault("fsync-live")
            fsync_dir(self.paths.live_root)
        return previous

    def install(self, keyfile: str, material: KeyMaterial) -> tuple[Path, Path | None]:
        """Write a new version and switch to it; returns ``(new_version, previous_version)``."""
        version = self.write_version(keyfile, material)
        previous = self.switch(keyfile, version)
        return version, previous

    def rollback(self, keyfile: str, failed: Path, previous: Path | None) -> None:
        """Return ``live/<keyfile>`` to ``previous`` (or remove it when there was none), drop ``failed``."""
        if previous is not None and previous.is_dir():
            self.switch(keyfile, previous)
        else:
            self._unlink_live(keyfile)
        shutil.rmtree(failed, ignore_errors=True)

    def _unlink_live(self, keyfile: str) -> None:
        try:
            os.unlink(self.paths.live_link(keyfile))
        except FileNotFoundError:
            return
        fsync_dir(self.paths.live_root)

    def remove(self, keyfile: str) -> None:
        """Remove the live link first (services stop seeing the files), then every version."""
        self._unlink_live(keyfile)
        shutil.rmtree(self.paths.versions_dir(keyfile), ignore_errors=True)

    def prune(self, keyfile: str) -> list[Path]:
        """Delete old versions, keeping the live one and the newest others up to ``keep_versions``."""
        live = self.current(keyfile)
        others = [v for v in self.versions(keyfile) if v != live]
        keep_others = self.keep_versions - (1 if live is not None else 0)
        doomed = others[: max(0, len(others) - keep_others)]
        for version in doomed:
            shutil.rmtree(version, ignore_errors=True)
        return doomed

    def clean_partial(self) -> list[Path]:
        """Remove what a crash may have left: temp version directories and temp links."""
        removed: list[Path] = []
        root = self.paths.versions_root
        if root.is_dir():
            for keyfile_dir in root.iterdir():
                if not keyfile_dir.is_dir() or keyfile_dir.is_symlink():
                    continue
                for entry in keyfile_dir.iterdir():
                    if entry.name.startswith(TMP_PREFIX):
                        shutil.rmtree(entry, ignore_errors=True)
                        removed.append(entry)
        if self.paths.live_root.is_dir():
            for entry in self.paths.live_root.iterdir():
                if entry.name.startswith("."):
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
        return removed

    def live_problems(self, keyfile: str, expected_meta: Mapping[str, Any] | None = None) -> list[str]:
        """What is wrong with the live set of ``keyfile`` (empty when intact)."""
        version = self.current(keyfile)
        if version is None:
            return [f"live/{keyfile} is missing or points outside versions/{keyfile}"]
        if not version.is_dir():
            return [f"{version.name} is missing"]
        return version_problems(version, expected_meta)
