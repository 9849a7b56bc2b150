"""Watch the keyring directory and ask the agent to check it whenever something there changes.

watchdog (inotify on Linux) reports every change under the data directory, the agent's own writes
included; events are only a hint to look. The check itself compares each live set with the hashes
the agent wrote (:func:`agent.keyring.version_problems`), so the agent's own writes never count as
drift, and a missed event is caught by the periodic check the agent also runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from agent.paths import LIVE_DIR, TMP_PREFIX, VERSIONS_DIR

log = logging.getLogger(__name__)


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


class _Collect(FileSystemEventHandler):
    def __init__(self, root: Path, changed: set[str], event: threading.Event, lock: threading.Lock) -> None:
        self._root = root
        self._changed = changed
        self._event = event
        self._lock = lock

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (ours, a service's) are not changes
        names = {keyfile_of(self._root, os.fsdecode(p)) for p in (event.src_path, event.dest_path) if p}
        names.discard(None)
        if not names:
            return
        with self._lock:
            self._changed.update(n for n in names if n is not None)
        self._event.set()


class DriftWatcher:
    """Call ``check(keyfiles)`` (from its own thread) shortly after files of those keyfiles change.

    ``debounce_s`` gathers a burst of events (an editor saving, ``rm -r``) into one check; only the
    keyfiles touched are checked, so the agent's own deploys of many credentials stay cheap.
    """

    def __init__(self, root: Path, check: Callable[[set[str]], object], *, debounce_s: float = 0.2) -> None:
        self.root = root
        self._check = check
        self._debounce_s = debounce_s
        self._keyfiles: set[str] = set()
        self._keyfiles_lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._observer: Observer | None = None  # type: ignore[valid-type]  # watchdog's alias is a variable
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (``root`` must exist)."""
        observer = Observer()
        handler = _Collect(self.root, self._keyfiles, self._changed, self._keyfiles_lock)
        observer.schedule(handler, str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="drift-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._changed.wait(0.5):
                continue
            # Let the burst finish, then look once.
            while self._changed.is_set() and not self._stop.is_set():
                self._changed.clear()
                self._stop.wait(self._debounce_s)
            if self._stop.is_set():
                return
            with self._keyfiles_lock:
                keyfiles = set(self._keyfiles)
                self._keyfiles.clear()
            try:
                self._check(keyfiles)
            except Exception:  # a failed check must not end the watcher; the next event retries
                log.exception("drift check failed")

    def stop(self) -> None:
        """Stop watching and wait for the threads."""
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if self._thread is not None:
            self._thread.join(5)
