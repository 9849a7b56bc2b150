"""The certmgr role (Domino's CertMgr task): turn credential requests into certificates.

One loop, the shape of every certstore loop: collect work (the changes feed keeps an in-memory mirror
of the documents the certmgr reads, and marks credentials dirty), act (a bounded pool runs at most one
order per credential), record (the credential's state document), stop on an event, back off by the
table in :mod:`agent.renewal`. Exactly one certmgr acts: it holds the lease (:mod:`agent.lease`)
and re-reads a credential from the database before acting on it.

A failure on one credential ends as that credential's status and message; the loop goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from agent import __version__
from agent.dns import DnsProvider, provider_for
from agent.dns.base import UnusableProvider
from agent.errors import AcmeError, ChallengeSetupError, RateLimited
from agent.issuer import AcmeIssuer, generate_account_key, load_account_key
from agent.keys import build_csr, certificate_info, generate_private_key, key_matches_certificate, split_chain
from agent.lease import CertmgrLease
from agent.renewal import NO_RETRY, renewal_time, retry_delay, utcnow
from agent.solver import FleetSolver, SolverSettings
from store import ids
from store.access import reconcile_access, wanted_holders
from store.couch import Database, JSONDict
from store.documents import (
    MAX_ERROR_HISTORY,
    AcmeAccount,
    AcmeAccountState,
    ErrorEntry,
    Server,
    Settings,
    TlsCredential,
    TlsCredentialState,
)
from store.documents import (
    DnsProvider as DnsProviderDoc,
)
from store.enrollment import CERTMGR_ROLE
from store.errors import CertstoreError, Conflict, CouchError, ValidationError
from store.follower import FOLLOW_BACKOFF, Change, ChangesFollower, MemoryCheckpoint, run_in_thread
from store.hostkey import HostKey, load_host_key
from store.names import Provider, RevocationReason, Status
from store.sealing import open_envelope, open_private_key_pem, seal, seal_private_key_pem

log = logging.getLogger(__name__)


#: Seconds between the certmgr's heartbeats on its own server document (only while it holds the lease).
HEARTBEAT_INTERVAL_S = 30.0

#: Statuses after a failure: the next attempt waits for the backoff table.
FAILED = (Status.ERROR, Status.EXPIRED)


class Action(StrEnum):
    """What a credential needs now."""

    NONE = "none"
    ISSUE = "issue"
    RENEW = "renew"
    REKEY = "rekey"
    REVOKE = "revoke"
    RESEAL = "reseal"
    FAIL = "fail"


@dataclass(frozen=True)
class Plan:
    """The decision for one credential: the action, why, and (for FAIL) the message to record."""

    action: Action
    reason: str
    wake_at: datetime | None = None


@dataclass
class CertmgrSettings:
    """How this certmgr runs."""

    name: str
    state_dir: Path
    ca_bundle: str | None = None
    workers: int = 4
    solver: SolverSettings = field(default_factory=SolverSettings)
    lease_ttl: timedelta = timedelta(seconds=30)
    scan_interval_s: float = 30.0
    heartbeat_fresh: timedelta = timedelta(minutes=3)
    order_deadline_s: float = 300.0


def _newer(asked: datetime | None, handled: datetime | None) -> bool:
    return asked is not None and (handled is None or asked > handled)


class Mirror:
    """The documents the certmgr reads, kept current by the changes feed (thread-safe)."""

    def __init__(self) -> None:
        self._docs: dict[str, JSONDict] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped on every change, so derived views can be cached

    def apply(self, doc_id: str, doc: JSONDict | None) -> None:
        """Store or (with None) forget a document."""
        with self._lock:
            if doc is None:
                self._docs.pop(doc_id, None)
            else:
                self._docs[doc_id] = doc
            self.generation += 1

    def get(self, doc_id: str) -> JSONDict | None:
        """The latest known version of a document."""
        with self._lock:
            return self._docs.get(doc_id)

    def of_kind(self, kind: str) -> list[JSONDict]:
        """Every document of one kind (by id prefix)."""
        with self._lock:
            docs = list(self._docs.values())
        out = []
        for doc in docs:
            try:
                if ids.parse(str(doc.get("_id"))).kind == kind:
                    out.append(doc)
            except ValidationError:
                continue
        return out


class Certmgr:
    """One certmgr process. ``run(stop)`` blocks; everything else is for tests and the CLI."""

    def __init__(
        self,
        db: Database,
        settings: CertmgrSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        host_key: HostKey | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.host_key = host_key or load_host_key(settings.state_dir)
        self.lease = CertmgrLease(db, settings.name, ttl=settings.lease_ttl, clock=clock)
        self.mirror = Mirror()
        self._dirty: set[str] = set()
        self._in_flight: set[str] = set()
        self._wake_at: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._issuers: dict[tuple[str, str], AcmeIssuer] = {}
        self._issuer_lock = threading.Lock()
        self._servers_cache: tuple[int, dict[str, Server]] | None = None
        self.orders = 0  # orders placed by this process (tests count duplicates with it)

    # --- feed -----------------------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        """Mirror a changed document and mark the credentials it concerns."""
        doc = None if change.deleted else change.doc
        self.mirror.apply(change.id, doc)
        try:
            parsed = ids.parse(change.id)
        except ValidationError:
            return
        if parsed.kind in (ids.KIND_CREDENTIAL, ids.KIND_CREDENTIAL_STATE):
            self.mark(parsed.name)
        elif parsed.kind in (
            ids.KIND_SERVER,
            ids.KIND_ACCOUNT,
            ids.KIND_ACCOUNT_STATE,
            ids.KIND_DNS,
            ids.KIND_SETTINGS,
        ):
            self.mark_all()

    def mark(self, name: str) -> None:
        """Ask for ``name`` to be looked at soon."""
        with self._lock:
            self._dirty.add(name)
        self._wake.set()

    def mark_all(self) -> None:
        """Ask for every credential to be looked at (a scan)."""
        names = [str(doc["_id"]).split(":", 1)[1] for doc in self.mirror.of_kind(ids.KIND_CREDENTIAL)]
        with self._lock:
            self._dirty.update(names)
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follow the database and act on credentials until ``stop`` is set."""
        self._ensure_certmgr_role()
        follower = ChangesFollower(self.db, self.on_change, MemoryCheckpoint(), stop_event=threading.Event())
        thread = run_in_thread(follower, "certmgr-feed")
        pool = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="certmgr-order")

        # Whoever sets ``stop`` (a signal handler, a test) also wakes the loop at once.
        def wake_on_stop() -> None:
            stop.wait()
            self._wake.set()

        threading.Thread(target=wake_on_stop, daemon=True).start()
        last_scan = 0.0
        last_beat = -HEARTBEAT_INTERVAL_S
        waiting_logged = False
        failures = 0
        try:
            while not stop.is_set():
                try:
                    held = self.lease.acquire()
                    failures = 0
                except CouchError as exc:
                    # The database is away: nobody can act, us included. Wait and try again.
                    delay = FOLLOW_BACKOFF[min(failures, len(FOLLOW_BACKOFF) - 1)]
                    failures += 1
                    log.warning("cannot reach the lease document: %s; retrying in %.1fs", exc, delay)
                    stop.wait(delay)
                    continue
                if not held:
                    if not waiting_logged:
                        log.info("waiting for the certmgr lease (held by %s)", self.lease.describe_holder())
                        waiting_logged = True
                    stop.wait(self.settings.lease_ttl.total_seconds() / 3)
                    continue
                waiting_logged = False
                if time.monotonic() - last_beat >= HEARTBEAT_INTERVAL_S:
                    last_beat = time.monotonic()
                    try:
                        self.beat()
                    except CouchError as exc:
                        log.warning("cannot write the certmgr's heartbeat: %s", exc)
                if not follower.stats.caught_up.is_set():
                    follower.stats.caught_up.wait(1.0)
                    continue
                now_s = self.clock().timestamp()
                if now_s - last_scan >= self.settings.scan_interval_s:
                    last_scan = now_s
                    self.mark_all()
                self._wake.clear()
                for name, plan in self._collect():
                    self._start(pool, name, plan)
                for account in self._accounts_to_roll_over():
                    self._start_account(pool, account)
                self._wake.wait(min(self.settings.lease_ttl.total_seconds() / 3, self._next_timer_s()))
        finally:
            follower.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            thread.join(5)
            self.lease.release()

    def _next_timer_s(self) -> float:
        with self._lock:
            if not self._wake_at:
                return 3600.0
            soonest = min(self._wake_at.values())
        return max(0.05, (soonest - self.clock()).total_seconds())

    def _collect(self) -> list[tuple[str, Plan]]:
        """The credentials that need an action now (dirty ones and those whose timer ran out)."""
        now = self.clock()
        with self._lock:
            due = {name for name, at in self._wake_at.items() if at <= now}
            names = (self._dirty | due) - self._in_flight
            self._dirty -= names
            for name in due:
                self._wake_at.pop(name, None)
        work = []
        for name in sorted(names):
            plan = self.plan(name)
            with self._lock:
                if plan.wake_at is not None:
                    self._wake_at[name] = plan.wake_at
                else:
                    self._wake_at.pop(name, None)
            if plan.action is not Action.NONE:
                work.append((name, plan))
        return work

    def _start(self, pool: ThreadPoolExecutor, name: str, plan: Plan) -> None:
        with self._lock:
            if name in self._in_flight:
                return
            self._in_flight.add(name)
        pool.submit(self._job, name)

    def _job(self, name: str) -> None:
        try:
            if not self.lease.held:
                return
            # Re-check against the database itself: another certmgr may have acted a moment ago.
            for doc_id in (ids.credential_id(name), ids.credential_state_id(name)):
                self.mirror.apply(doc_id, self.db.get_or_none(doc_id))
            plan = self.plan(name)
            if plan.action is not Action.NONE:
                log.info("credential %s: %s (%s)", name, plan.action.value, plan.reason)
                self.act(name, plan)
        except Exception:
            log.exception("credential %s: unexpected failure", name)
        finally:
            with self._lock:
                self._in_flight.discard(name)
                self._dirty.add(name)  # look again: the state just changed
            self._wake.set()

    def _start_account(self, pool: ThreadPoolExecutor, account: str) -> None:
        key = ids.account_id(account)  # cannot collide with a credential name (no ":" in names)
        with self._lock:
            if key in self._in_flight:
                return
            self._in_flight.add(key)
        pool.submit(self._account_job, account, key)

    def _account_job(self, account: str, key: str) -> None:
        try:
            if self.lease.held:
                self.roll_over(account)
        except CertstoreError as exc:
            log.warning("account %s: key rollover failed: %s", account, exc)
            self._account_message(account, f"key rollover failed: {exc}")
        except Exception:
            log.exception("account %s: unexpected failure", account)
        finally:
            with self._lock:
                self._in_flight.discard(key)

    def _accounts_to_roll_over(self) -> list[str]:
        """Accounts whose ``rollover`` request is newer than the last one carried out."""
        due = []
        for doc in self.mirror.of_kind(ids.KIND_ACCOUNT):
            try:
                account = AcmeAccount.from_doc(doc)
                state_doc = self.mirror.get(ids.account_state_id(account.name))
                state = AcmeAccountState.from_doc(state_doc) if state_doc else None
            except ValidationError:
                continue
            if state is not None and state.account_url and _newer(account.rollover, state.rolled_over):
                if state.status_message is None or not state.status_message.startswith("key rollover failed"):
                    due.append(account.name)
        return due

    # --- deciding -------------------------------------------------------------------------------

    def _request(self, name: str) -> TlsCredential | str | None:
        doc = self.mirror.get(ids.credential_id(name))
        if doc is None:
            return None
        try:
            return TlsCredential.from_doc(doc)
        except ValidationError as exc:
            return str(exc)

    def _state(self, name: str) -> TlsCredentialState | None:
        doc = self.mirror.get(ids.credential_state_id(name))
        if doc is None:
            return None
        try:
            return TlsCredentialState.from_doc(doc)
        except ValidationError as exc:
            log.warning("ignoring a malformed state document: %s", exc)
            return None

    def _servers(self) -> dict[str, Server]:
        """Every valid server document, parsed once per change of the mirror (a scan asks often)."""
        generation = self.mirror.generation
        cached = self._servers_cache
        if cached is not None and cached[0] == generation:
            return cached[1]
        servers = {}
        for doc in self.mirror.of_kind(ids.KIND_SERVER):
            try:
                server = Server.from_doc(doc)
            except ValidationError:
                continue
            servers[server.name] = server
        self._servers_cache = (generation, servers)
        return servers

    def _settings_doc(self) -> Settings:
        doc = self.mirror.get(ids.SETTINGS)
        try:
            return Settings.from_doc(doc) if doc is not None else Settings()
        except ValidationError:
            return Settings()

    def account_name(self, credential: TlsCredential) -> str | None:
        """The request's account, or the settings' default."""
        return credential.account or self._settings_doc().default_account

    def preflight(self, credential: TlsCredential) -> str | None:
        """Problems an admin must fix in the request or its surroundings; None when it can proceed."""
        if credential.provider is not Provider.ACME:
            return (
                f'provider "{credential.provider.value}" is not handled by the certmgr yet: '
                'use provider "acme"'
            )
        account = self.account_name(credential)
        if account is None:
            return 'no ACME account: set "account" on the request or "default_account" in settings'
        account_doc = self.mirror.get(ids.account_id(account))
        if account_doc is None:
            return f'unknown account "{account}": there is no {ids.account_id(account)} document'
        try:
            AcmeAccount.from_doc(account_doc)
        except ValidationError as exc:
            return f"account {account} is invalid: {exc}"
        servers = self._servers()
        unknown = [s for s in credential.servers if s not in servers]
        if unknown:
            listed = ", ".join(f'"{s}"' for s in unknown)
            return (
                f"unknown server {listed} in servers with access: enroll it first "
                f"(certstore server enroll {unknown[0]} on that host)"
            )
        if self.settings.name not in servers or servers[self.settings.name].key_id != self.host_key.key_id:
            return (
                f"the certmgr's own server document (server:{self.settings.name}) does not carry its "
                "current key: run `certstore server enroll` on the certmgr host"
            )
        return None

    def plan(self, name: str) -> Plan:
        """Decide what credential ``name`` needs now (pure apart from reading the mirror)."""
        now = self.clock()
        request = self._request(name)
        state = self._state(name)
        if request is None:
            return Plan(Action.NONE, "the request was deleted")
        if isinstance(request, str):
            return self._fail_plan(state, request)
        problem = self.preflight(request)
        if problem is not None:
            return self._fail_plan(state, problem)
        if state is None or state.sealed_key is None or state.chain_pem is None:
            return self._retry_plan(state, request, Action.ISSUE, "first issuance", now)
        handled = state.handled_actions
        actions = request.actions
        if actions.revoke is not None and _newer(actions.revoke.at, handled.revoke):
            return Plan(Action.REVOKE, f"revocation asked at {actions.revoke.at.isoformat()}")
        if state.status is Status.REVOKED:
            if _newer(actions.rekey, handled.rekey) or _newer(actions.renew, handled.renew):
                return self._retry_plan(state, request, Action.REKEY, "replacing a revoked certificate", now)
            return Plan(Action.NONE, "revoked")
        if _newer(actions.rekey, handled.rekey):
            return self._retry_plan(state, request, Action.REKEY, "rekey asked", now)
        if state.rekey_reason:
            return self._retry_plan(state, request, Action.REKEY, state.rekey_reason, now)
        wanted_type = request.key_type or self._settings_doc().default_key_type
        if sorted(state.hostnames) != sorted(request.hostnames) or state.key_type != wanted_type:
            return self._retry_plan(state, request, Action.ISSUE, "the names or key type changed", now)
        if _newer(actions.renew, handled.renew):
            return self._retry_plan(state, request, Action.RENEW, "renewal asked", now)
        if self._needs_reseal(state, request):
            return Plan(Action.RESEAL, "servers with access changed")
        if state.next_renewal is not None and now >= state.next_renewal:
            return self._retry_plan(state, request, Action.RENEW, "renewal is due", now)
        if state.status in FAILED:
            # A retry of a failed renewal (the request itself is fine; the certificate may be live).
            return self._retry_plan(state, request, Action.RENEW, "retrying after an error", now)
        return Plan(Action.NONE, "up to date", wake_at=state.next_renewal)

    def _retry_plan(
        self,
        state: TlsCredentialState | None,
        request: TlsCredential,
        action: Action,
        reason: str,
        now: datetime,
    ) -> Plan:
        """``action`` now, unless a failure of the same request asks to wait (the backoff table)."""
        if (
            state is not None
            and state.status in FAILED
            and state.next_attempt is not None
            and state.request_rev == request.rev
            and now < state.next_attempt
        ):
            return Plan(Action.NONE, f"waiting to retry ({reason})", wake_at=state.next_attempt)
        return Plan(action, reason)

    def _fail_plan(self, state: TlsCredentialState | None, message: str) -> Plan:
        if state is not None and state.status is Status.ERROR and state.status_message == message:
            return Plan(Action.NONE, "error already recorded")
        return Plan(Action.FAIL, message)

    def _needs_reseal(self, state: TlsCredentialState, request: TlsCredential) -> bool:
        keys, _missing = wanted_holders(request, self._servers(), self.settings.name)
        return sorted(keys) != sorted(state.recipients)

    # --- acting ---------------------------------------------------------------------------------

    def act(self, name: str, plan: Plan) -> None:
        """Carry out ``plan``; any certstore error becomes the credential's error status."""
        request = self._request(name)
        state = self._state(name)
        try:
            if plan.action is Action.FAIL or not isinstance(request, TlsCredential):
                self._record_failure(name, state, request, plan.reason, permanent=True)
            elif plan.action is Action.RESEAL:
                self._reseal(request, state)
            elif plan.action is Action.REVOKE:
                self._revoke(request, state)
            else:
                self._issue(request, state, plan.action)
        except CertstoreError as exc:
            retry_after = exc.retry_after if isinstance(exc, AcmeError) else None
            self._record_failure(
                name,
                self._state(name),
                request,
                str(exc),
                retry_after=retry_after,
                rate_limited=isinstance(exc, RateLimited),
            )

    def _write_state(self, state: TlsCredentialState) -> None:
        doc = state.validated().to_doc()
        current = self.db.get_or_none(state.doc_id)
        if current is not None:
            doc["_rev"] = current["_rev"]
        else:
            doc.pop("_rev", None)
        try:
            self.db.put(doc)
        except Conflict:
            # Only this certmgr writes state documents: a conflict is our own earlier write
            # racing its replica; take the newest rev and write again.
            fresh = self.db.get(state.doc_id)
            doc["_rev"] = fresh["_rev"]
            self.db.put(doc)
        state.rev = doc["_rev"]
        self.mirror.apply(state.doc_id, doc)

    def _record_failure(
        self,
        name: str,
        state: TlsCredentialState | None,
        request: TlsCredential | str | None,
        message: str,
        *,
        permanent: bool = False,
        retry_after: datetime | None = None,
        rate_limited: bool = False,
    ) -> None:
        now = self.clock()
        state = state or TlsCredentialState(name=name, status=Status.ERROR)
        state.failures = state.failures + 1
        delay = NO_RETRY if permanent else retry_delay(state.failures, retry_after, now=now)
        state.next_attempt = None if permanent else now + delay
        state.request_rev = request.rev if isinstance(request, TlsCredential) else None
        # A certificate already issued stays on the state (and deployed while it is valid): the
        # status says what failed, and whether that certificate has run out meanwhile.
        expired = state.not_after is not None and now >= state.not_after
        state.status = Status.EXPIRED if expired else Status.ERROR
        when = "" if permanent else f"; next attempt {state.next_attempt:%Y-%m-%d %H:%M:%S}Z"
        hint = " (rate limited by the CA)" if rate_limited else ""
        state.status_message = f"{message}{hint}{when}"
        state.error_history = [*state.error_history, ErrorEntry(at=now, message=message)][-MAX_ERROR_HISTORY:]
        log.warning("credential %s: %s", name, state.status_message)
        self._write_state(state)

    def _reseal(self, request: TlsCredential, state: TlsCredentialState | None) -> None:
        if state is None:
            return
        change = reconcile_access(state, request, self._servers(), self.host_key, self.settings.name)
        if change.outcome == "unchanged":
            state.recipients = sorted(wanted_holders(request, self._servers(), self.settings.name)[0])
        log.info("credential %s: %s (%s)", request.name, change.outcome, change.reason)
        self._write_state(state)

    # ACME accounts ------------------------------------------------------------------------------

    def issuer_for(self, account: str) -> AcmeIssuer:
        """The issuer for ``account``, registering it (and sealing its key) the first time."""
        account_doc = AcmeAccount.from_doc(self.db.get(ids.account_id(account)))
        with self._issuer_lock:
            key = (account, account_doc.directory_url)
            if key in self._issuers:
                return self._issuers[key]
            state_doc = self.db.get_or_none(ids.account_state_id(account))
            state = AcmeAccountState.from_doc(state_doc) if state_doc else AcmeAccountState(name=account)
            if state.sealed_key is None:
                state.sealed_key = dict(seal(generate_account_key(), [self.host_key.public_key]))
                self._put_model(state)
            account_key = load_account_key(open_envelope(state.sealed_key, self.host_key))
            issuer = AcmeIssuer(
                account_doc.directory_url,
                account_key,
                ca_bundle=self.settings.ca_bundle,
                account_uri=state.account_url if state.directory_url == account_doc.directory_url else None,
            )
            if state.account_url is None or state.directory_url != account_doc.directory_url:
                eab = None
                if account_doc.eab_kid and account_doc.sealed_eab_hmac:
                    hmac = open_envelope(account_doc.sealed_eab_hmac, self.host_key).decode()
                    eab = (account_doc.eab_kid, hmac)
                email = account_doc.contact[0].removeprefix("mailto:") if account_doc.contact else None
                info = issuer.register(email, account_doc.tos_agreed, eab)
                state.account_url = info.uri
                state.directory_url = account_doc.directory_url
                state.registered_at = self.clock()
                state.status_message = f"registered at {account_doc.directory_url}"
                self._put_model(state)
            self._issuers[key] = issuer
            return issuer

    def roll_over(self, account: str) -> None:
        """Replace the account's key (RFC 8555 key change), crash-safe: the new key is sealed and
        stored before the CA hears of it, so a certmgr killed half-way finishes the job next time."""
        request = AcmeAccount.from_doc(self.db.get(ids.account_id(account)))
        issuer = self.issuer_for(account)
        state = AcmeAccountState.from_doc(self.db.get(ids.account_state_id(account)))
        if not _newer(request.rollover, state.rolled_over):
            return
        resumed = state.sealed_next_key is not None
        if state.sealed_next_key is None:
            state.sealed_next_key = dict(seal(generate_account_key(), [self.host_key.public_key]))
            self._put_model(state)
        new_key = load_account_key(open_envelope(state.sealed_next_key, self.host_key))
        try:
            issuer.rollover_account_key(new_key)
        except AcmeError:
            # A rollover cut short after the CA switched keys: the new key already finds the account.
            probe = AcmeIssuer(request.directory_url, new_key, ca_bundle=self.settings.ca_bundle)
            if not resumed or probe.account().uri != state.account_url:
                raise
            with self._issuer_lock:
                self._issuers[(account, request.directory_url)] = probe
        state.sealed_key, state.sealed_next_key = state.sealed_next_key, None
        state.rolled_over = request.rollover
        state.status_message = f"account key rolled over at {self.clock():%Y-%m-%d %H:%M:%S}Z"
        self._put_model(state)
        log.info("account %s: key rolled over", account)

    def _account_message(self, account: str, message: str) -> None:
        doc = self.db.get_or_none(ids.account_state_id(account))
        state = AcmeAccountState.from_doc(doc) if doc else AcmeAccountState(name=account)
        state.status_message = message
        self._put_model(state)

    def _put_model(self, model: AcmeAccountState) -> None:
        doc = model.validated().to_doc()
        self.db.put(doc)
        model.rev = doc["_rev"]

    # Issuing ------------------------------------------------------------------------------------

    def _dns_providers(self) -> list[DnsProvider]:
        """A provider per ``dns:`` document; one that cannot be used fails only the names it serves."""
        providers: list[DnsProvider] = []
        for doc in self.mirror.of_kind(ids.KIND_DNS):
            try:
                model = DnsProviderDoc.from_doc(doc)
            except ValidationError as exc:
                log.warning("ignoring an invalid DNS provider document: %s", exc)
                continue
            try:
                secrets: dict[str, str] = {}
                if model.sealed_credentials is not None:
                    secrets = json.loads(open_envelope(model.sealed_credentials, self.host_key))
                config = {"zones": model.zones, **model.options}
                providers.append(provider_for(model.kind.value, config, secrets))
            except (CertstoreError, ValueError) as exc:
                reason = f"{model.doc_id} cannot be used: {exc}"
                providers.append(UnusableProvider(model.zones, reason))
        return providers

    def mirror_heartbeat(self, server: str) -> datetime | None:
        """The last heartbeat of ``server`` the certmgr has seen."""
        found = self._servers().get(server)
        return found.heartbeat if found is not None else None

    def responders(self) -> dict[str, str]:
        """Responder URLs of the servers whose heartbeat is fresh (the CA may reach any of them)."""
        now = self.clock()
        live = {}
        for server in self._servers().values():
            if (
                server.responder_url
                and server.heartbeat
                and now - server.heartbeat <= self.settings.heartbeat_fresh
            ):
                live[server.name] = server.responder_url
        return live

    def _issue(self, request: TlsCredential, state: TlsCredentialState | None, action: Action) -> None:
        now = self.clock()
        account = self.account_name(request)
        assert account is not None  # preflight checked it
        key_type = request.key_type or self._settings_doc().default_key_type
        had_cert = state is not None and state.chain_pem is not None
        old_chain = state.chain_pem if state is not None else None
        state = state or TlsCredentialState(name=request.name, status=Status.PENDING)
        state.status = Status.RENEW if had_cert else Status.PENDING
        state.status_message = f"{action.value}: ordering a certificate for {', '.join(request.hostnames)}"
        self._write_state(state)

        # A renewal, or new names, keep the key; a rekey (or a new key type) makes a new one.
        reuse = action is not Action.REKEY and state.sealed_key is not None and state.key_type == key_type
        if reuse:
            key_pem = open_private_key_pem(state.sealed_key or {}, self.host_key)
        else:
            key_pem = generate_private_key(key_type.value)
        issuer = self.issuer_for(account)
        solver = FleetSolver(
            self.db,
            request,
            self._dns_providers(),
            self.responders,
            self.settings.solver,
            self.clock,
        )
        self.orders += 1
        issued = issuer.issue(
            build_csr(key_pem, request.hostnames),
            request.hostnames,
            solver,
            profile=request.profile,
            deadline_s=self.settings.order_deadline_s,
        )
        if not key_matches_certificate(key_pem, issued.cert_pem):
            raise ChallengeSetupError("the CA returned a certificate that does not match the key")
        servers = self._servers()
        keys, missing = wanted_holders(request, servers, self.settings.name)
        info = issued.info
        ari = None
        try:
            window = issuer.renewal_info(issued.cert_pem)
            ari = (window.start, window.end) if window is not None else None
        except CertstoreError as exc:
            log.info("no renewal information for %s: %s", request.name, exc)
        state.status = Status.ISSUED
        state.chain_pem = issued.fullchain_pem.decode()
        state.not_before = info.not_before
        state.not_after = info.not_after
        state.serial = info.serial_hex
        state.fingerprint_sha256 = info.fingerprint_sha256
        state.sealed_key = dict(seal_private_key_pem(key_pem, keys))
        state.recipients = sorted(keys)
        state.hostnames = list(request.hostnames)
        state.key_type = key_type
        state.account = account
        state.next_renewal = renewal_time(info.not_before, info.not_after, now=self.clock(), ari_window=ari)
        state.rekey_reason = None
        state.failures = 0
        state.next_attempt = None
        state.request_rev = request.rev
        handled = state.handled_actions
        handled.renew = request.actions.renew or handled.renew
        handled.rekey = request.actions.rekey or handled.rekey
        waiting = f"; not yet sealed for {', '.join(missing)} (no key)" if missing else ""
        state.status_message = (
            f"issued by {info.issuer} at {now:%Y-%m-%d %H:%M:%S}Z, valid until {info.not_after:%Y-%m-%d}, "
            f"renewal from {state.next_renewal:%Y-%m-%d}; sealed for {', '.join(sorted(keys))}{waiting}"
        )
        self._write_state(state)
        if action is Action.REKEY and old_chain:
            self._revoke_quietly(issuer, old_chain, RevocationReason.KEY_COMPROMISE, request.name)

    def _revoke_quietly(
        self, issuer: AcmeIssuer, chain_pem: str, reason: RevocationReason, name: str
    ) -> None:
        leaf = split_chain(chain_pem.encode())[0]
        try:
            issuer.revoke(leaf, reason.code)
        except CertstoreError as exc:
            log.warning("credential %s: revoking the replaced certificate failed: %s", name, exc)

    def _revoke(self, request: TlsCredential, state: TlsCredentialState | None) -> None:
        revoke = request.actions.revoke
        if state is None or state.chain_pem is None or revoke is None:
            return
        account = state.account or self.account_name(request)
        assert account is not None
        leaf = split_chain(state.chain_pem.encode())[0]
        self.issuer_for(account).revoke(leaf, revoke.reason.code)
        state.status = Status.REVOKED
        state.handled_actions.revoke = revoke.at
        state.next_renewal = None
        state.failures = 0
        state.next_attempt = None
        state.status_message = (
            f"certificate {certificate_info(leaf).serial_hex} revoked ({revoke.reason.value}) at "
            f"{self.clock():%Y-%m-%d %H:%M:%S}Z; ask for a rekey to get a new one"
        )
        self._write_state(state)

    def _ensure_certmgr_role(self) -> None:
        """Mark this host's server document with the certmgr role (admins seal EAB and DNS secrets to it)."""
        doc = self.db.get_or_none(ids.server_id(self.settings.name))
        if doc is None:
            raise ValidationError(
                f"server:{self.settings.name} does not exist: run `certstore server enroll "
                f"{self.settings.name}` on this host first"
            )
        server = Server.from_doc(doc)
        if server.key_id != self.host_key.key_id:
            raise ValidationError(
                f"server:{self.settings.name} carries key {server.key_id}, but this host's key is "
                f"{self.host_key.key_id}: run `certstore server enroll` (or rotate-key) on this host"
            )
        if CERTMGR_ROLE not in server.roles:
            server.roles = [*server.roles, CERTMGR_ROLE]
            self.db.put(server.validated().to_doc())

    def beat(self) -> None:
        """Record on this host's server document that the certmgr is alive (for `certstore status`).

        Read-modify-write: only the heartbeat and version change; a conflict is left for the next beat.
        """
        doc = self.db.get_or_none(ids.server_id(self.settings.name))
        if doc is None:
            return
        server = Server.from_doc(doc)
        server.heartbeat = self.clock()
        server.agent_version = __version__
        try:
            self.db.put(server.validated().to_doc())
        except Conflict:
            log.debug("server:%s changed while writing the heartbeat; next time", self.settings.name)
