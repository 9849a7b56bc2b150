"""Watch the keyring directory and ask the agent to check it whenever something there changes.

watchdog (inotify on Linux) reports every change under the data directory, the agent's own writes
included; events are only a hint to look. The check itself compares each live set with the hashes
the agent wrote (:func:`agent.keyring.version_problems`), so the agent's own writes never count as
drift, and a missed event is caught by the periodic check the agent also runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


class _Poke(FileSystemEventHandler):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (ours, a service's) are not changes
        self._event.set()


class DriftWatcher:
    """Call ``check`` (from its own thread) shortly after files under ``root`` change.

    ``debounce_s`` gathers a burst of events (an editor saving, ``rm -r``) into one check.
    """

    def __init__(self, root: Path, check: Callable[[], object], *, debounce_s: float = 0.2) -> None:
        self.root = root
        self._check = check
        self._debounce_s = debounce_s
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._observer: Observer | None = None  # type: ignore[valid-type]  # watchdog's alias is a variable
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (``root`` must exist)."""
        observer = Observer()
        observer.schedule(_Poke(self._changed), str(self.root), recursive=True)
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
            try:
                self._check()
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
