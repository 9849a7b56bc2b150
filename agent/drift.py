"""Watch the keyring directory and ask the agent to check it whenever something there changes.

inotify (through ``ctypes``, a few dozen lines instead of the watchdog library and its two threads)
reports every change under the data directory, the agent's own writes included; events are only a
hint to look. The check itself compares each live set with the hashes the agent wrote
(:func:`agent.keyring.version_problems`), so the agent's own writes never count as drift, and a missed
event (a full event queue, the kernel's watch limit) is caught by the periodic check the agent also
runs. Reads (``IN_OPEN``, ``IN_ACCESS``, ``IN_CLOSE_NOWRITE``) are not asked for: a service reading its
certificate is not a change.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from agent.paths import LIVE_DIR, TMP_PREFIX, VERSIONS_DIR
from store.files import libc

log = logging.getLogger(__name__)

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: The changes asked for: writes, mode/owner changes, creations, deletions and renames.
WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


def keyfile_of(root: Path, path: str) -> str | None:
    """The keyfile a changed path belongs to (``versions/<k>/...`` or ``live/<k>``), or None."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return None
    if len(parts) < 2 or parts[0] not in (VERSIONS_DIR, LIVE_DIR):
        return None
    name = parts[1]
    if parts[0] == LIVE_DIR and name.startswith("."):
        # A temp link ".<keyfile>.tmp-<token>" is about to become live/<keyfile>.
        name = name[1:].split(TMP_PREFIX, 1)[0]
    return name


class InotifyUnavailable(OSError):
    """This system has no inotify (or refuses one more instance): the periodic check still runs."""


class Inotify:
    """A recursive inotify watch on one directory tree; :meth:`read` returns the changed paths."""

    def __init__(self, root: Path) -> None:
        try:
            self._libc = libc()
            init = self._libc.inotify_init1
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailable(errno.ENOSYS, f"inotify is not available: {exc}") from None
        fd = init(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise InotifyUnavailable(code, f"inotify_init1: {os.strerror(code)}")
        self.fd: int = fd
        # stop() writes to this pipe to end a wait at once.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.root = root
        self._paths: dict[int, str] = {}
        self.limit_reached = False
        self.add_tree(str(root))

    def add_tree(self, top: str) -> None:
        """Watch ``top`` and every directory below it (symbolic links are not followed), except
        hidden ones: the agent writes a version in ``.tmp-*`` and renames it when complete, and
        watching it there would only add a dozen events per deploy."""
        self._add(top)
        for dirpath, dirnames, _files in os.walk(top, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for dirname in dirnames:
                self._add(os.path.join(dirpath, dirname))

    def _add(self, path: str) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH_MASK)
        if wd >= 0:
            self._paths[wd] = path
            return
        code = ctypes.get_errno()
        if code == errno.ENOSPC and not self.limit_reached:
            self.limit_reached = True
            log.warning(
                "the kernel's inotify watch limit is reached (fs.inotify.max_user_watches): changes by "
                "hand under some directories are found by the periodic check only"
            )
        # ENOENT/ENOTDIR: it went away (or was a file) before we looked; nothing to watch.

    def read(self, timeout: float) -> tuple[set[str], bool]:
        """Wait up to ``timeout`` seconds; returns the paths that changed and whether events were lost."""
        ready, _, _ = select.select([self.fd, self._wake_r], [], [], timeout)
        if self.fd not in ready:
            return set(), False
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return set(), False
        return self.process(data)

    def process(self, data: bytes) -> tuple[set[str], bool]:
        """Decode a read's worth of ``struct inotify_event`` records (and watch new directories)."""
        changed: set[str] = set()
        overflow = False
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw_name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                overflow = True
                continue
            if mask & IN_IGNORED:
                self._paths.pop(wd, None)
                continue
            directory = self._paths.get(wd)
            if directory is None or raw_name.startswith(b"."):
                # Hidden names are the agent's work in progress (a version being written, a link
                # about to replace the live one); what it becomes is reported under its own name.
                continue
            path = os.path.join(directory, os.fsdecode(raw_name)) if raw_name else directory
            changed.add(path)
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self.add_tree(path)
        return changed, overflow

    def close(self) -> None:
        """Close the inotify instance (its watches go with it)."""
        for fd in (self.fd, self._wake_r, self._wake_w):
            os.close(fd)

    def wake(self) -> None:
        """End a :meth:`read` in progress (from another thread)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")


class DriftWatcher:
    """Call ``check(keyfiles)`` (from its own thread) shortly after files of those keyfiles change.

    ``debounce_s`` gathers a burst of events (an editor saving, ``rm -r``) into one check; only the
    keyfiles touched are checked, so the agent's own deploys of many credentials stay cheap. When the
    kernel dropped events, ``check(None)`` checks every keyfile.
    """

    def __init__(
        self, root: Path, check: Callable[[set[str] | None], object], *, debounce_s: float = 0.2
    ) -> None:
        self.root = root
        self._check = check
        self._debounce_s = debounce_s
        self._stop = threading.Event()
        self._inotify: Inotify | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (``root`` must exist). Without inotify, logs why and leaves drift to the
        agent's periodic check."""
        try:
            self._inotify = Inotify(self.root)
        except InotifyUnavailable as exc:
            log.warning("drift is checked periodically only: %s", exc.strerror)
            return
        self._thread = threading.Thread(
            target=self._run, args=(self._inotify,), name="drift-watch", daemon=True
        )
        self._thread.start()

    def _run(self, inotify: Inotify) -> None:
        while not self._stop.is_set():
            changed, overflow = inotify.read(0.5)
            if not changed and not overflow:
                continue
            # Let the burst finish, then look once.
            while not self._stop.is_set():
                more, lost = inotify.read(self._debounce_s)
                if not more and not lost:
                    break
                changed |= more
                overflow |= lost
            if self._stop.is_set():
                return
            keyfiles = {k for k in (keyfile_of(self.root, p) for p in changed) if k is not None}
            if not keyfiles and not overflow:
                continue
            try:
                self._check(None if overflow else keyfiles)
            except Exception:  # a failed check must not end the watcher; the next event retries
                log.exception("drift check failed")

    def stop(self) -> None:
        """Stop watching: wake the thread, wait for it, then close the inotify instance."""
        self._stop.set()
        inotify, self._inotify = self._inotify, None
        if inotify is None:
            return
        inotify.wake()
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive():
                return  # stuck in a check: its daemon thread ends with the process, fds with it
        inotify.close()
