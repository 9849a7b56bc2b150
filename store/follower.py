"""Follow a database's continuous ``_changes`` feed, applying each change once and checkpointing.

The loop has the shape every certstore loop has: read work (the next change), act (the handler),
checkpoint (the change's seq), stop on an event, back off by an explicit table when the feed breaks.

``seq`` values are opaque: they are stored and sent back exactly as the server gave them, never
parsed or compared (CouchDB 3's are strings, pouchdb-server's integers).

Delivery: the checkpoint is written after the handler returns, so a restart resumes after the last
applied change and nothing is skipped. A process killed between the handler's effect and the
checkpoint write sees that one change again; handlers are idempotent for that reason (they compare
what they hold with what the document asks for).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from store.couch import Database, Feed, JSONDict
from store.errors import CouchError, CouchUnreachable, Forbidden, Unauthorized
from store.files import fsync_dir

log = logging.getLogger(__name__)

#: Seconds to wait before reconnecting after the n-th consecutive failure (the last entry repeats).
FOLLOW_BACKOFF: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class Change:
    """One row of the feed: the document's id, whether it is deleted, and the document itself."""

    seq: Any
    id: str
    deleted: bool
    doc: JSONDict | None
    revs: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: JSONDict) -> Change:
        """Build from a ``_changes`` row (``include_docs=true``)."""
        revs = tuple(str(c.get("rev", "")) for c in row.get("changes", []) if isinstance(c, dict))
        doc = row.get("doc")
        return cls(
            seq=row["seq"],
            id=str(row["id"]),
            deleted=bool(row.get("deleted", False)),
            doc=doc if isinstance(doc, dict) else None,
            revs=revs,
        )


class Checkpoint(Protocol):
    """Where a follower keeps the seq of the last change it applied."""

    def load(self) -> Any | None:
        """The stored seq, or None to start from the beginning."""

    def save(self, seq: Any) -> None:
        """Store ``seq`` durably."""


class LocalDocCheckpoint:
    """A checkpoint in a ``_local`` document of the followed database (never replicated)."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self._rev: str | None = None

    def load(self) -> Any | None:
        """The stored seq, or None."""
        doc = self.db.get_local(self.name)
        if doc is None:
            return None
        self._rev = doc.get("_rev")
        return doc.get("since")

    def save(self, seq: Any) -> None:
        """Write the seq (one PUT: the rev is remembered between saves)."""
        self._rev = self.db.put_local(self.name, {"since": seq, "saved_at": time.time()}, rev=self._rev)


class FileCheckpoint:
    """A checkpoint in a local JSON file, replaced atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Any | None:
        """The stored seq, or None when the file does not exist."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CouchError(f"checkpoint file {self.path} is unreadable: {exc}") from None
        return data.get("since") if isinstance(data, dict) else None

    def save(self, seq: Any) -> None:
        """Write the seq atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump({"since": seq, "saved_at": time.time()}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


class MemoryCheckpoint:
    """A checkpoint that lives only as long as the process (for tests and one-shot tools)."""

    def __init__(self, since: Any | None = None) -> None:
        self.since = since

    def load(self) -> Any | None:
        """The seq held in memory."""
        return self.since

    def save(self, seq: Any) -> None:
        """Keep the seq in memory."""
        self.since = seq


Handler = Callable[[Change], object]


@dataclass
class FollowerStats:
    """Counters a caller (status output, benchmarks, tests) may read."""

    applied: int = 0
    connects: int = 0
    failures: int = 0
    last_error: str = ""
    last_seq: Any = None
    caught_up: threading.Event = field(default_factory=threading.Event)


class ChangesFollower:
    """Apply every change of ``db`` to ``handler``, in order, resuming from ``checkpoint``.

    ``run()`` blocks until ``stop()`` is called (from any thread) or a fatal error: wrong credentials
    or no permission, which no retry can fix. Everything else (server down, feed cut, database
    missing, a handler raising) is retried from the last checkpoint after a backoff delay.
    """

    def __init__(
        self,
        db: Database,
        handler: Handler,
        checkpoint: Checkpoint,
        *,
        heartbeat: float = 10.0,
        backoff: Sequence[float] = FOLLOW_BACKOFF,
        stop_event: threading.Event | None = None,
        on_caught_up: Callable[[], None] | None = None,
        batch_size: int = 500,
    ) -> None:
        self.db = db
        self.handler = handler
        self.checkpoint = checkpoint
        self.heartbeat = heartbeat
        self.backoff = tuple(backoff)
        self.stop_event = stop_event or threading.Event()
        self.on_caught_up = on_caught_up
        self.batch_size = batch_size
        self.stats = FollowerStats()
        self._feed: Feed | None = None
        self._since: Any | None = None
        self._unsaved = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Ask the loop to end; an open feed is closed so ``run()`` returns promptly."""
        self.stop_event.set()
        with self._lock:
            if self._feed is not None:
                self._feed.interrupt()

    def run(self) -> None:
        """Follow until stopped; raises :class:`Unauthorized`/:class:`Forbidden` at once.

        The seq of the last applied change is kept in memory as well as in the checkpoint, so a
        checkpoint write that fails (the server just went away) is retried before reading on, and
        the change is not applied a second time.
        """
        loaded = False
        failures = 0
        while not self.stop_event.is_set():
            try:
                if not loaded:
                    self._since = self.checkpoint.load()
                    loaded = True
                if self._unsaved:
                    self.checkpoint.save(self._since)
                    self._unsaved = False
                self.stats.connects += 1
                self._catch_up()
                self._follow_continuous()
                failures = 0
            except (Unauthorized, Forbidden):
                raise
            except Exception as exc:  # any failure means: reconnect from the last applied change
                if self.stop_event.is_set():
                    break
                self.stats.failures += 1
                self.stats.last_error = str(exc) or type(exc).__name__
                delay = self.backoff[min(failures, len(self.backoff) - 1)]
                failures += 1
                expected = isinstance(exc, CouchError)
                log.log(
                    logging.WARNING if expected else logging.ERROR,
                    "changes feed of %s: %s; reconnecting in %.2fs",
                    self.db,
                    self.stats.last_error,
                    delay,
                    exc_info=not expected,
                )
                self.stop_event.wait(delay)

    def _apply(self, row: JSONDict) -> None:
        """Hand one feed row to the handler, then checkpoint it."""
        change = Change.from_row(row)
        self.handler(change)
        self._since = change.seq
        self._unsaved = True
        self.stats.applied += 1
        self.stats.last_seq = change.seq
        self.checkpoint.save(change.seq)
        self._unsaved = False

    def _idle(self) -> None:
        """The feed has nothing new: a checkpoint that holds saves back writes what it holds."""
        flush = getattr(self.checkpoint, "flush", None)
        if callable(flush):
            flush()

    @property
    def since(self) -> Any | None:
        """The seq of the last change applied (None before the first)."""
        return self._since

    def _catch_up(self) -> None:
        """Read the feed in batches (a normal request each) until a batch comes back empty.

        The next batch is requested while this one is applied (one request ahead, in a thread), so the
        server's work and the handler's overlap; a batch read ahead and not applied is dropped.
        """
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="changes-read-ahead")
        try:
            ahead = reader.submit(self._read_batch, self._since_param())
            while not self.stop_event.is_set():
                rows = ahead.result()
                if not rows:
                    break
                ahead = reader.submit(self._read_batch, rows[-1]["seq"])
                for row in rows:
                    if self.stop_event.is_set():
                        return
                    self._apply(row)
        finally:
            reader.shutdown(wait=False, cancel_futures=True)
        if not self.stop_event.is_set() and not self.stats.caught_up.is_set():
            self.stats.caught_up.set()
            if self.on_caught_up is not None:
                self.on_caught_up()

    def _read_batch(self, since: Any) -> list[JSONDict]:
        page = self.db.changes(include_docs=True, since=since, limit=self.batch_size)
        rows: list[JSONDict] = page.get("results", [])
        return rows

    def _since_param(self) -> Any:
        return self._since if self._since is not None else 0

    def _follow_continuous(self) -> None:
        """One connection to the continuous feed: apply changes until it ends or we are stopped."""
        params: JSONDict = {
            "feed": "continuous",
            "include_docs": True,
            "heartbeat": int(self.heartbeat * 1000),
            "since": self._since_param(),
        }
        # Heartbeats arrive every `heartbeat` seconds; a much longer silence means a dead link.
        read_timeout = self.heartbeat * 3 + 5
        feed = Feed()
        with self._lock:
            if self.stop_event.is_set():
                return
            self._feed = feed  # from now on stop() can interrupt the connection, even mid-connect
        try:
            with self.db.client.feed(
                self.db.path + "/_changes", params, read_timeout=read_timeout, feed=feed
            ):
                for line in feed.lines():
                    if self.stop_event.is_set():
                        return
                    if not line.strip():
                        self._idle()  # a heartbeat: nothing new
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        raise CouchUnreachable(f"changes feed of {self.db} sent a garbled line") from None
                    if "error" in row:
                        raise CouchUnreachable(f"changes feed error: {row.get('error')}: {row.get('reason')}")
                    if "id" not in row and "last_seq" in row:
                        # The server ended the feed (CouchDB's own timeout); reconnect from here.
                        return
                    self._apply(row)
        finally:
            with self._lock:
                self._feed = None
        if not self.stop_event.is_set():
            raise CouchUnreachable(f"changes feed of {self.db} closed by the server")


def run_in_thread(follower: ChangesFollower, name: str = "changes-follower") -> threading.Thread:
    """Start ``follower.run()`` in a daemon thread and return it."""
    thread = threading.Thread(target=follower.run, name=name, daemon=True)
    thread.start()
    return thread


def wait_for(condition: Callable[[], bool], timeout: float, *, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
