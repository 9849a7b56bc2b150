"""The certmgr lease: one document with a fixed id, so that exactly one certmgr acts at a time.

CouchDB's revision check is the lock: taking or refreshing the lease is a write against the revision
we read, and a concurrent taker gets 409. A lease not refreshed within its time to live is stale and
any waiting certmgr may take it. Every certmgr that may take over must use the same database (the
hub): two replicas each accept a write locally, so a lease is only exclusive on one database.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from agent.renewal import utcnow
from store import ids
from store.couch import Database
from store.documents import Lease
from store.errors import Conflict, ValidationError

log = logging.getLogger(__name__)

INSTANCE_FIELD = "instance"


class CertmgrLease:
    """The lease as seen by one certmgr process (``holder`` is its server name)."""

    def __init__(
        self,
        db: Database,
        holder: str,
        *,
        ttl: timedelta = timedelta(seconds=30),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.instance = uuid.uuid4().hex
        self._valid_until: datetime | None = None

    @property
    def held(self) -> bool:
        """True while our last successful take or refresh has not run out."""
        return self._valid_until is not None and self.clock() < self._valid_until

    def describe_holder(self) -> str:
        """Who holds the lease now, for messages ("nobody" when free or stale)."""
        doc = self.db.get_or_none(ids.LEASE_CERTMGR)
        if doc is None:
            return "nobody"
        try:
            lease = Lease.from_doc(doc)
        except ValidationError:
            return "nobody (the lease document is malformed)"
        if lease.expires <= self.clock():
            return f"nobody ({lease.holder}'s lease ran out at {lease.expires.isoformat()})"
        return f"{lease.holder} until {lease.expires.isoformat()}"

    def acquire(self) -> bool:
        """Take or refresh the lease; False when another live certmgr holds it or won a race."""
        now = self.clock()
        doc = self.db.get_or_none(ids.LEASE_CERTMGR)
        current: Lease | None = None
        if doc is not None:
            try:
                current = Lease.from_doc(doc)
            except ValidationError as exc:
                log.warning("replacing a malformed lease document: %s", exc)
        ours = doc is not None and doc.get(INSTANCE_FIELD) == self.instance
        if current is not None and not ours and current.expires > now:
            self._valid_until = None
            return False
        lease = Lease(
            holder=self.holder,
            acquired_at=current.acquired_at if (ours and current is not None) else now,
            expires=now + self.ttl,
        )
        lease.extra = {INSTANCE_FIELD: self.instance}
        new_doc = lease.to_doc()
        if doc is not None:
            new_doc["_rev"] = doc["_rev"]
        try:
            self.db.put(new_doc)
        except Conflict:
            self._valid_until = None
            return False
        if not ours:
            log.info("certmgr %s (instance %s) took the lease", self.holder, self.instance[:8])
        self._valid_until = lease.expires
        return True

    def release(self) -> None:
        """Give the lease up at once (on a clean stop), so a successor need not wait for it to expire."""
        doc = self.db.get_or_none(ids.LEASE_CERTMGR)
        if doc is None or doc.get(INSTANCE_FIELD) != self.instance:
            return
        lease = Lease.from_doc(doc)
        now = self.clock()
        lease.acquired_at = min(lease.acquired_at, now)
        lease.expires = now
        try:
            self.db.put(lease.to_doc())
        except Conflict:
            pass
        self._valid_until = None
