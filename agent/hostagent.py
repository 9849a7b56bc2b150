"""The per-host agent: follow the database, decide what this host must hold, deploy it, report.

One loop (a :class:`store.follower.ChangesFollower`) applies every change in order:

- ``challenge:*`` → the in-memory :class:`agent.responder.ChallengeMap` the HTTP-01 responder serves;
- ``credential:<name>`` / ``credential:<name>:state`` → :meth:`HostAgent.reconcile`, which deploys,
  repairs or removes the keyring of that credential.

What this host holds is decided from two documents: the request must list this server in
``servers``, and the state must carry a chain and a sealed key with status ``issued`` or ``renew``,
or ``error`` while the last good certificate is still valid (the certmgr keeps it when a renewal
fails). ``revoked``, ``expired`` and ``archived`` remove the files (unless ``keep_removed``).

Before anything is written the key is unsealed with the host key, and checked: it matches the leaf,
every certificate is signed by the next and valid now (and leads to ``ca_file`` if configured), the
serial and fingerprint are the state's, and the names are the request's. Any failure deploys nothing
and puts the reason on ``deploy:<server>:<credential>``.

Documents this server writes (``server:<name>`` heartbeat, ``deploy:`` reports) go through one
:class:`Reporter` thread, so a slow or unreachable database never stalls the loop; reports wait in
memory and are retried. A summary goes to ``<state_dir>/agent-status.json`` for ``agent status``,
which works offline.

Restart: in-memory knowledge is rebuilt from the ``credentials_by_server`` view and the current
challenge documents, then the feed resumes from the checkpoint, so nothing before the checkpoint is
needed again and nothing after it is skipped.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from agent import __version__
from agent.config import AgentConfig
from agent.drift import DriftWatcher
from agent.errors import ConfigError, DeployError
from agent.hooks import StepResult, live_check, run_hook
from agent.keyring import FaultHook, FileOwner, KeyMaterial, Keyring, StagedVersion, read_meta
from agent.keys import certificate_info, key_matches_certificate, load_certificate, split_chain, verify_chain
from agent.paths import AgentPaths, check_keyfile
from agent.responder import ChallengeMap, Responder, apply_challenge_doc
from store import ids
from store.couch import CouchClient, Database, JSONDict
from store.documents import Deployment, Outcome, Server, TlsCredential, TlsCredentialState
from store.errors import (
    CertstoreError,
    Conflict,
    CouchError,
    NotARecipient,
    NotFound,
    SealingError,
    ValidationError,
)
from store.follower import FOLLOW_BACKOFF, Change, ChangesFollower, FileCheckpoint, FollowerStats
from store.hostkey import HostKey, load_host_key, load_previous_keys
from store.names import Status, format_timestamp
from store.sealing import open_private_key_pem

log = logging.getLogger(__name__)

#: Statuses whose certificate is no longer to be served: files are removed.
_WITHDRAWN = (Status.REVOKED, Status.EXPIRED, Status.ARCHIVED)
_CURRENT = (Status.ISSUED, Status.RENEW)
#: Seconds between retries of reports the database did not take (it may be offline).
REPORT_BACKOFF: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)
#: Versions staged while catching up before they are committed even if no checkpoint is due.
MAX_STAGED = 500


def _now() -> datetime:
    return datetime.now(UTC)


class BatchingCheckpoint(FileCheckpoint):
    """A file checkpoint written at most every ``interval_s`` (0: after every change).

    Why: a fsynced write per change dominated a fresh agent's catch-up, and gave every live change
    (and the agent's own report coming back through its feed) two more fsyncs, in the burst when a
    whole fleet deploys at once. Saving less often never skips a change: a crash only means the
    changes since the last write are read again, and applying a change again is a no-op (the agent
    compares what it holds with what the documents ask for; after a restart it also reads what it
    should hold before following the feed). The follower flushes a held-back seq when its feed goes
    idle (each heartbeat) and when it stops, so the file trails the feed only while changes flow.

    ``before_save`` runs before each write: the agent commits the versions it staged meanwhile, so
    the checkpoint never names a change whose files are not yet durable and live.
    """

    def __init__(
        self,
        path: Path,
        *,
        before_save: Callable[[], None] = lambda: None,
        interval_s: float = 1.0,
    ) -> None:
        super().__init__(path)
        self._before_save = before_save
        self._interval_s = interval_s
        self._pending: Any = None
        self._dirty = False
        self._last = 0.0

    def save(self, seq: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._before_save()
            super().save(seq)
            self._last, self._dirty = now, False
        else:
            self._pending, self._dirty = seq, True

    def flush(self) -> None:
        """Write a seq held back (and commit what is staged)."""
        self._before_save()
        if self._dirty:
            super().save(self._pending)
            self._last, self._dirty = time.monotonic(), False


@dataclass
class Held:
    """What this host has deployed for one credential (rebuilt from meta.json at start)."""

    keyfile: str
    fingerprint: str
    serial: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Deployed:
    """What a deploy needs to remember of its key material once the files are written (no key)."""

    fingerprint_sha256: str
    serial: str
    not_after: datetime


@dataclass(frozen=True)
class _Pending:
    """A deploy staged while catching up, finished by :meth:`HostAgent.commit_staged`."""

    request: TlsCredential
    keyfile: str
    held: Held | None
    facts: _Deployed
    staged: StagedVersion


@dataclass
class Report:
    """The last outcome for one credential: the ``deploy:`` document's content, also kept locally."""

    credential: str
    state: str  # deployed | failed | removed | kept | rolled-back
    keyfile: str | None = None
    serial: str | None = None
    fingerprint_sha256: str | None = None
    not_after: str | None = None
    paths: list[str] = field(default_factory=list)
    deployed_at: datetime | None = None
    hook_result: StepResult | None = None
    hook_at: datetime | None = None
    live_check: StepResult | None = None
    live_check_at: datetime | None = None
    error: str | None = None
    drift_repairs: int = 0
    at: datetime = field(default_factory=_now)

    def to_json(self) -> JSONDict:
        """For the local status file and ``agent status --json``."""
        return {
            "credential": self.credential,
            "state": self.state,
            "keyfile": self.keyfile,
            "serial": self.serial,
            "fingerprint_sha256": self.fingerprint_sha256,
            "not_after": self.not_after,
            "deployed_at": format_timestamp(self.deployed_at) if self.deployed_at else None,
            "hook_result": None if self.hook_result is None else vars(self.hook_result),
            "live_check": None if self.live_check is None else vars(self.live_check),
            "error": self.error,
            "drift_repairs": self.drift_repairs,
            "at": format_timestamp(self.at),
        }

    def apply_to(self, model: Deployment) -> Deployment:
        """Fill a ``deploy:`` model (keeping its rev and unknown fields)."""
        model.serial = self.serial
        model.paths = list(self.paths)
        model.deployed_at = self.deployed_at
        model.hook_result = (
            None
            if self.hook_result is None
            else Outcome(
                ok=self.hook_result.ok, at=self.hook_at or self.at, message=self.hook_result.message[:2000]
            )
        )
        model.live_check = (
            None
            if self.live_check is None
            else Outcome(
                ok=self.live_check.ok,
                at=self.live_check_at or self.at,
                message=self.live_check.message[:2000],
            )
        )
        model.error = self.error[:2000] if self.error else None
        model.extra.update(
            state=self.state,
            keyfile=self.keyfile,
            fingerprint_sha256=self.fingerprint_sha256,
            not_after=self.not_after,
            drift_repairs=self.drift_repairs,
            reported_at=format_timestamp(self.at),
        )
        return model


class Reporter:
    """The one thread that writes this server's documents: heartbeats, ``deploy:`` reports, the status file.

    Reports are kept per document id (the newest wins) until the database takes them, so an offline
    spell loses nothing but intermediate states.
    """

    def __init__(self, agent: HostAgent, db: Database, *, heartbeat_interval: float) -> None:
        self.agent = agent
        self.db = db
        self.heartbeat_interval = heartbeat_interval
        self._pending: dict[str, Report] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._heartbeat_due = True
        self._status_dirty = True
        self._thread: threading.Thread | None = None
        self._revs: dict[str, str] = {}
        self.last_heartbeat: datetime | None = None
        self.last_error = ""

    def submit(self, report: Report) -> None:
        with self._cond:
            self._pending[report.credential] = report
            self._status_dirty = True
            self._cond.notify()

    def status_changed(self) -> None:
        with self._cond:
            self._status_dirty = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agent-reporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(10)
        self.agent.write_status_file()

    def _run(self) -> None:
        failures = 0
        next_heartbeat = time.monotonic()
        while not self._stop.is_set():
            with self._cond:
                # While the agent catches up, reports wait (the newest per credential is kept): a
                # fresh agent's thousand reports would otherwise compete with the feed it is reading.
                holding = self.agent.catching_up()
                timeout = max(0.0, min(1.0, next_heartbeat - time.monotonic()))
                if (holding or not self._pending) and not self._stop.is_set():
                    self._cond.wait(timeout)
                batch = {} if holding else dict(self._pending)
                status_dirty, self._status_dirty = self._status_dirty, False
            if status_dirty:
                self.agent.write_status_file()
            try:
                if time.monotonic() >= next_heartbeat:
                    self.write_heartbeat()
                    next_heartbeat = time.monotonic() + self.heartbeat_interval
                for credential, report in batch.items():
                    if self._stop.is_set():
                        return
                    self._write_report(report)
                    with self._cond:
                        if self._pending.get(credential) is report:
                            del self._pending[credential]
                failures = 0
            except CouchError as exc:
                self.last_error = str(exc)
                delay = REPORT_BACKOFF[min(failures, len(REPORT_BACKOFF) - 1)]
                failures += 1
                log.warning("cannot write status documents: %s; retrying in %.1fs", exc, delay)
                self._stop.wait(delay)

    def write_heartbeat(self) -> None:
        """Read-modify-write ``server:<name>``: only heartbeat, agent_version, responder_url change."""
        name = self.agent.config.server
        for _ in range(5):
            doc = self.db.get_or_none(ids.server_id(name))
            model = Server.from_doc(doc) if doc is not None else Server(name=name)
            model.heartbeat = _now()
            model.agent_version = __version__
            model.responder_url = self.agent.responder_url
            try:
                self.db.put(model.to_doc())
            except Conflict:
                continue  # someone (an admin adding a role) wrote it meanwhile: read again
            self.last_heartbeat = model.heartbeat
            return
        raise CouchError(f"{ids.server_id(name)} kept changing while writing the heartbeat")

    def _write_report(self, report: Report) -> None:
        server = self.agent.config.server
        doc_id = ids.deploy_id(server, report.credential)
        for attempt in range(5):
            rev = self._revs.get(doc_id) if attempt == 0 else None
            model = Deployment(server=server, credential=report.credential, rev=rev)
            if rev is None:
                doc = self.db.get_or_none(doc_id)
                if doc is not None:
                    model.rev = str(doc["_rev"])  # every field is ours: the report replaces them all
            try:
                self._revs[doc_id] = self.db.put(report.apply_to(model).to_doc())
            except Conflict:
                continue  # a copy of ours replicated back, or the cached rev is stale: read again
            return
        raise CouchError(f"{doc_id} kept changing while writing the report")


class HostAgent:
    """Everything one host runs; :meth:`run` blocks until ``stop_event`` is set."""

    def __init__(
        self,
        config: AgentConfig,
        db: Database,
        *,
        host_keys: list[HostKey] | None = None,
        fault: FaultHook | None = None,
        clock: Callable[[], datetime] = _now,
        watch: bool = True,
        checkpoint_s: float = 1.0,
    ) -> None:
        self.config = config
        self.db = db
        self.paths = AgentPaths.create(config.data_dir, config.state_dir)
        self.keyring = Keyring(
            self.paths,
            owner=FileOwner(config.owner_uid, config.owner_gid),
            p12_password=config.p12_password,
            keep_versions=config.keep_versions,
            fault=fault,
        )
        self.challenges = ChallengeMap()
        self.responder: Responder | None = None
        self._host_keys = host_keys
        self._clock = clock
        self._watch = watch
        self._watcher: DriftWatcher | None = None
        self._wake_periodic = threading.Event()
        # 0 writes the checkpoint after every change (bench/bench_agent.py compares, catching up).
        self._checkpoint_s = checkpoint_s
        self._lock = threading.RLock()
        self._requests: dict[str, TlsCredential] = {}
        self._states: dict[str, TlsCredentialState] = {}
        self._held: dict[str, Held] = {}
        self._staged: dict[str, _Pending] = {}  # written while catching up, not yet durable nor live
        self._batching = False  # stage deploys even when not catching up (see _batch)
        self._reports: dict[str, Report] = {}
        self._failed: dict[str, str] = {}  # credential -> fingerprint whose reload hook failed
        self._need_state: set[str] = set()  # requests learnt while catching up, state not seen yet
        self.drift_repairs = 0
        self.reporter = Reporter(self, db, heartbeat_interval=config.heartbeat_interval)
        self.follower: ChangesFollower | None = None
        self._live_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="live-check")
        self._started_at = _now()

    # -- keys -----------------------------------------------------------------------------------

    @property
    def host_keys(self) -> list[HostKey]:
        if self._host_keys is None:
            self._host_keys = [load_host_key(self.paths.state_dir), *load_previous_keys(self.paths.state_dir)]
        return self._host_keys

    @property
    def responder_url(self) -> str | None:
        if self.config.responder_advertise:
            return self.config.responder_advertise
        return self.responder.url if self.responder is not None else None

    # -- the loop ---------------------------------------------------------------------------------

    def handle(self, change: Change) -> None:
        """Apply one change of the feed (the follower's handler)."""
        if change.id.startswith("challenge:"):
            apply_challenge_doc(self.challenges, change.id, change.doc, change.deleted)
            return
        if not change.id.startswith("credential:"):
            return
        try:
            parsed = ids.parse(change.id)
        except ValidationError:
            return
        doc = None if change.deleted else change.doc
        with self._lock:
            if self._need_state and not self.catching_up():
                self.fetch_missing_states()  # left over from catch-up (the database was away then)
            if parsed.kind == ids.KIND_CREDENTIAL:
                self._learn_request(parsed.name, doc)
            elif parsed.kind == ids.KIND_CREDENTIAL_STATE:
                if parsed.name not in self._requests and parsed.name not in self._held:
                    return  # not this host's: most of the feed ends here
                self._learn_state(parsed.name, doc)
            else:
                return
            self.reconcile(parsed.name)

    def _learn_request(self, name: str, doc: JSONDict | None) -> None:
        if doc is None:
            self._forget(name)
            return
        servers = doc.get("servers")
        if not isinstance(servers, list) or self.config.server not in servers:
            self._forget(name)
            return
        try:
            request = TlsCredential.from_doc(doc)
        except ValidationError as exc:
            self._forget(name)
            self._report(Report(name, "failed", error=f"the request is invalid: {exc}"))
            return
        self._requests[name] = request
        if name not in self._states:
            if self.catching_up():
                # Usually the state comes later in the feed; those that do not are read in bulk once
                # caught up (one request per hundred instead of one per credential).
                self._need_state.add(name)
            else:
                # The state may be earlier in the feed than this request (the request was edited after
                # issuance); a CouchError here makes the follower retry this change after a backoff.
                self._learn_state(name, self.db.get_or_none(ids.credential_state_id(name)))

    def catching_up(self) -> bool:
        """True until the follower has read the feed to its end once."""
        return self.follower is None or not self.follower.stats.caught_up.is_set()

    def fetch_missing_states(self) -> None:
        """Read the states of requests learnt during catch-up whose state the feed did not bring."""
        with self._lock:
            names = sorted(self._need_state)
            for start in range(0, len(names), 100):
                chunk = names[start : start + 100]
                keys = [ids.credential_state_id(name) for name in chunk]
                rows = self.db.all_docs(keys=keys, include_docs=True)["rows"]
                docs = {row.get("key"): row.get("doc") for row in rows}
                for name, key in zip(chunk, keys, strict=True):
                    doc = docs.get(key)
                    self._need_state.discard(name)
                    if name in self._requests:
                        self._learn_state(name, doc if isinstance(doc, dict) else None)
                        self.reconcile(name)

    def _on_caught_up(self, checkpoint: BatchingCheckpoint) -> None:
        with self._batch():
            try:
                self.fetch_missing_states()
            except CouchError as exc:
                log.warning("cannot read the remaining states yet: %s (retried with the next change)", exc)
        checkpoint.flush()
        self._wake_periodic.set()  # start the drift watcher now, from the periodic thread

    def _start_watching(self) -> None:
        """Start the drift watcher (once); :meth:`_periodic` then checks every live set.

        Not from the start: while catching up, the agent's own thousands of writes would each be an
        event for the watcher's thread to handle, competing with the deploys for the interpreter.
        The periodic thread starts it as soon as the agent has caught up, or at its first round if
        catching up takes long (the database away), and its full check covers what changed before.
        """
        with self._lock:
            if self._watch and self._watcher is None:
                self._watcher = DriftWatcher(self.paths.data_dir, self.check_drift)
                self._watcher.start()

    def _learn_state(self, name: str, doc: JSONDict | None) -> None:
        self._need_state.discard(name)
        if doc is None:
            self._states.pop(name, None)
            return
        try:
            self._states[name] = TlsCredentialState.from_doc(doc)
        except ValidationError as exc:
            self._states.pop(name, None)
            self._report(Report(name, "failed", error=f"the state document is invalid: {exc}"))

    def _forget(self, name: str) -> None:
        self._need_state.discard(name)
        self._requests.pop(name, None)
        self._states.pop(name, None)
        self._failed.pop(name, None)

    def _deployable(self, state: TlsCredentialState) -> bool:
        if state.chain_pem is None or state.sealed_key is None:
            return False
        if state.status in _CURRENT:
            return True
        # A failed renewal keeps the last good certificate on the state: keep serving it while valid.
        return (
            state.status is Status.ERROR and state.not_after is not None and state.not_after > self._clock()
        )

    def reconcile(self, name: str) -> None:
        """Bring this host's files for credential ``name`` in line with what is known of it."""
        with self._lock:
            if name in self._staged:
                self.commit_staged()  # decide from what is live, not from a version still in flight
            request = self._requests.get(name)
            state = self._states.get(name)
            held = self._held.get(name)
            if request is None:
                if held is not None:
                    self._remove(
                        name,
                        held,
                        "this server no longer has access (credential deleted or "
                        "server removed from servers)",
                    )
                return
            if state is None:
                return
            if not self._deployable(state):
                if held is not None and state.status in _WITHDRAWN:
                    self._remove(name, held, f"the certificate is {state.status.value}")
                return
            try:
                keyfile = check_keyfile(request.keyfile_name)
            except CertstoreError as exc:
                self._report(Report(name, "failed", error=str(exc)))
                return
            if held is not None and held.keyfile == keyfile and held.fingerprint == state.fingerprint_sha256:
                problems = self.keyring.live_problems(keyfile, held.meta)
                if problems:
                    # Drift noticed through the feed before the watcher saw it: repaired the same way.
                    self._deploy(request, state, keyfile, held, repair="; ".join(problems))
                return
            if self._failed.get(name) == state.fingerprint_sha256:
                return  # its reload hook failed: wait for a new certificate (or a restart) to try again
            self._deploy(request, state, keyfile, held)

    def _material(self, request: TlsCredential, state: TlsCredentialState) -> KeyMaterial:
        """Unseal and check everything; raises a CertstoreError naming the first problem."""
        name = request.name
        assert state.sealed_key is not None and state.chain_pem is not None
        try:
            try:
                key_pem = open_private_key_pem(state.sealed_key, self.host_keys)
            except NotARecipient:
                self._host_keys = None  # the host key may have been rotated while running: read it again
                key_pem = open_private_key_pem(state.sealed_key, self.host_keys)
        except SealingError as exc:
            raise DeployError(f"cannot unseal the private key: {exc}", credential=name) from None
        chain = split_chain(state.chain_pem.encode())
        if not chain:
            raise DeployError("the state holds no certificate", credential=name)
        info = certificate_info(chain[0])
        if not key_matches_certificate(key_pem, chain[0]):
            raise DeployError("the private key does not match the certificate", credential=name)
        if state.fingerprint_sha256 != info.fingerprint_sha256 or (
            state.serial and state.serial != info.serial_hex
        ):
            raise DeployError(
                "the certificate is not the one the state describes (serial or fingerprint differ)",
                credential=name,
            )
        if sorted(info.names) != sorted(request.hostnames):
            raise DeployError(
                f"the certificate names {', '.join(info.names)} are not the requested "
                f"{', '.join(request.hostnames)}",
                credential=name,
            )
        _check_links(chain, self._clock())
        if self.config.ca_file is not None:
            verify_chain(chain, self.config.ca_file.read_bytes(), at=self._clock())
        return KeyMaterial(
            credential=name,
            key_pem=key_pem,
            chain=tuple(chain),
            serial=info.serial_hex,
            names=info.names,
            not_after=info.not_after,
            fingerprint_sha256=info.fingerprint_sha256,
        )

    def _deploy(
        self,
        request: TlsCredential,
        state: TlsCredentialState,
        keyfile: str,
        held: Held | None,
        *,
        repair: str | None = None,
    ) -> None:
        name = request.name
        owner = self._keyfile_owner(keyfile, name)
        try:
            if owner is not None:
                raise DeployError(
                    f"keyfile {keyfile} is already used on this host by credential {owner}", credential=name
                )
            material = self._material(request, state)
        except (CertstoreError, ValueError) as exc:
            log.warning("not deploying %s: %s", name, exc)
            self._report(Report(name, "failed", keyfile=keyfile, serial=state.serial, error=str(exc)))
            return
        facts = _Deployed(material.fingerprint_sha256, material.serial, material.not_after)
        staging = repair is None and (self._batching or self.catching_up())
        if not staging:
            self.commit_staged()  # what an install does must come after what was staged before it
        try:
            if staging:
                # Made durable and live together with the rest of the batch (commit_staged).
                staged = self.keyring.stage(keyfile, material)
                self._staged[name] = _Pending(request, keyfile, held, facts, staged)
                if len(self._staged) >= MAX_STAGED:
                    self.commit_staged()
                return
            version, previous = self.keyring.install(keyfile, material)
            meta = read_meta(version) or {}
        except OSError as exc:
            # Disk full, a read-only mount, a permission: report it and go on with the feed; the
            # live set is untouched (install switches only after a complete version is written).
            self.keyring.clean_partial()
            self._cannot_write(name, keyfile, state.serial, exc)
            return
        self._switched(request, keyfile, held, facts, meta, version, previous, repair)

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """Stage the deploys made inside (as while catching up), and commit them at the end."""
        with self._lock:
            self._batching = True
            try:
                yield
            finally:
                self._batching = False
                self.commit_staged()

    def _keyfile_owner(self, keyfile: str, name: str) -> str | None:
        """Another credential that holds ``keyfile`` or has a version of it staged, if any."""
        for other, held in self._held.items():
            if held.keyfile == keyfile and other != name:
                return other
        for other, pending in self._staged.items():
            if pending.keyfile == keyfile and other != name:
                return other
        return None

    def commit_staged(self) -> None:
        """Make the versions staged while catching up durable and live (:meth:`Keyring.commit`), then
        finish each deploy as :meth:`_deploy` does: hook, report, prune.

        Called before every checkpoint write, so the checkpoint never names a change whose files are
        not yet live and durable.
        """
        with self._lock:
            pending, self._staged = self._staged, {}
            if not pending:
                return
            try:
                results = self.keyring.commit([p.staged for p in pending.values()])
            except OSError as exc:
                self.keyring.clean_partial()
                for name, p in pending.items():
                    self._cannot_write(name, p.keyfile, p.facts.serial, exc)
                return
            for (name, p), result in zip(pending.items(), results, strict=True):
                if isinstance(result, OSError):
                    self._cannot_write(name, p.keyfile, p.facts.serial, result)
                else:
                    self._switched(p.request, p.keyfile, p.held, p.facts, p.staged.meta, *result, None)

    def _cannot_write(self, name: str, keyfile: str, serial: str | None, exc: OSError) -> None:
        log.error("cannot write the keyring of %s: %s", name, exc)
        self._report(
            Report(
                name,
                "failed",
                keyfile=keyfile,
                serial=serial,
                error=f"cannot write the keyring files: {exc.strerror or exc}",
            )
        )

    def _switched(
        self,
        request: TlsCredential,
        keyfile: str,
        held: Held | None,
        facts: _Deployed,
        meta: dict[str, Any],
        version: Path,
        previous: Path | None,
        repair: str | None,
    ) -> None:
        """After ``live/<keyfile>`` points at ``version``: the hook (rolling back if it fails), the report."""
        name = request.name
        new = Held(keyfile, facts.fingerprint_sha256, facts.serial, meta)
        base = self._reports.get(name)
        report = Report(
            name,
            "deployed",
            keyfile=keyfile,
            serial=facts.serial,
            fingerprint_sha256=facts.fingerprint_sha256,
            not_after=format_timestamp(facts.not_after),
            paths=self.paths.live_paths(keyfile),
            deployed_at=_now(),
            drift_repairs=base.drift_repairs if base is not None else 0,
        )
        if repair is not None:
            # The files were restored as they were: the service already runs this certificate.
            self.drift_repairs += 1
            report.drift_repairs += 1
            report.error = None
            report.hook_result = StepResult(True, f"restored after drift ({repair}); no reload needed")
            report.hook_at = _now()
        else:
            hook_result = self._run_hook(request, keyfile)
            if hook_result is not None:
                report.hook_result, report.hook_at = hook_result, _now()
                if not hook_result.ok:
                    self.keyring.rollback(keyfile, version, previous)
                    self._failed[name] = facts.fingerprint_sha256
                    back = "the previous version" if previous is not None else "nothing (no previous version)"
                    report.state = "rolled-back"
                    report.error = f"reload hook failed, rolled back to {back}: {hook_result.message}"
                    if held is not None and previous is not None:
                        report.serial, report.fingerprint_sha256 = held.serial, held.fingerprint
                    else:
                        self._held.pop(name, None)
                        report.paths = []
                    self._report(report)
                    return
        self._held[name] = new
        if held is not None and held.keyfile != keyfile:
            self._remove_files(held.keyfile)  # the request renamed its keyfile
        self.keyring.prune(keyfile)
        self._report(report)
        endpoint = self.config.options_for(name).live_check or request.live_check
        if endpoint and repair is None:
            self._live_checks.submit(
                self._run_live_check, name, endpoint, request.hostnames[0], facts.fingerprint_sha256
            )

    def _run_hook(self, request: TlsCredential, keyfile: str) -> StepResult | None:
        hook_name = self.config.options_for(request.name).reload_hook or request.reload_hook
        if hook_name is None:
            return None
        hook = self.config.hooks.get(hook_name)
        if hook is None:
            # Not a failure of the new files: the admin has not configured the tag on this host.
            log.warning(
                "credential %s names reload hook %s, which this host does not configure",
                request.name,
                hook_name,
            )
            return StepResult(True, f"hook {hook_name} is not configured on this host; nothing reloaded")
        return run_hook(
            hook,
            {
                "CERTSTORE_CREDENTIAL": request.name,
                "CERTSTORE_KEYFILE": keyfile,
                "CERTSTORE_LIVE_DIR": str(self.paths.live_link(keyfile)),
            },
        )

    def _run_live_check(self, name: str, endpoint: str, server_name: str, fingerprint: str) -> None:
        timeout = self.config.options_for(name).live_check_timeout
        result = live_check(endpoint, server_name, fingerprint, deadline_s=timeout)
        with self._lock:
            report = self._reports.get(name)
            if report is None or report.fingerprint_sha256 != fingerprint:
                return  # a newer deploy took over
            # A new object, not a change to the one the reporter may be writing right now: it drops
            # a pending report only when it is the very object it wrote, so this one is never lost.
            self._report(replace(report, live_check=result, live_check_at=_now()))

    def _remove_files(self, keyfile: str) -> None:
        if not self.config.keep_removed:
            self.keyring.remove(keyfile)

    def _remove(self, name: str, held: Held, reason: str) -> None:
        self._remove_files(held.keyfile)
        del self._held[name]
        state = "kept" if self.config.keep_removed else "removed"
        what = "files kept (keep_removed)" if self.config.keep_removed else "files removed"
        self._report(
            Report(
                name,
                state,
                keyfile=held.keyfile,
                serial=held.serial,
                error=None,
                paths=self.paths.live_paths(held.keyfile) if self.config.keep_removed else [],
                hook_result=StepResult(True, f"{what}: {reason}"),
            )
        )

    def _report(self, report: Report) -> None:
        report.at = _now()
        self._reports[report.credential] = report
        self.reporter.submit(report)

    # -- drift ------------------------------------------------------------------------------------

    def check_drift(self, keyfiles: set[str] | None = None) -> int:
        """Restore live sets that differ from what was deployed (only ``keyfiles``, if given).

        Returns how many were restored.
        """
        restored = 0
        with self._lock:
            self.commit_staged()  # a repair installs at once: nothing staged may come after it
            for name, held in list(self._held.items()):
                if keyfiles is not None and held.keyfile not in keyfiles:
                    continue
                problems = self.keyring.live_problems(held.keyfile, held.meta)
                if not problems:
                    continue
                request, state = self._requests.get(name), self._states.get(name)
                detail = "; ".join(problems)
                if request is None or state is None or not self._deployable(state):
                    log.warning("drift in %s (%s) but its documents are not known yet", held.keyfile, detail)
                    continue
                log.warning("drift in %s: %s; restoring", held.keyfile, detail)
                self._deploy(request, state, held.keyfile, held, repair=detail)
                restored += 1
        return restored

    # -- start-up ---------------------------------------------------------------------------------

    def load_held(self) -> None:
        """Rebuild what this host holds from the data directory (meta.json of each live set)."""
        self.keyring.clean_partial()
        for keyfile in self.keyring.live_keyfiles():
            try:
                version = self.keyring.current(keyfile)
            except CertstoreError:
                continue
            meta = read_meta(version) if version is not None else None
            if meta is None or not isinstance(meta.get("credential"), str):
                continue
            self._held[meta["credential"]] = Held(
                keyfile, str(meta.get("fingerprint_sha256", "")), str(meta.get("serial", "")), meta
            )

    def snapshot(self) -> None:
        """Learn the current requests for this host, their states and the live challenges.

        Needed only when resuming from a checkpoint: changes before it are not replayed.
        """
        rows = self.db.view("certstore", "credentials_by_server", key=self.config.server, include_docs=True)[
            "rows"
        ]
        with self._lock, self._batch():
            for row in rows:
                doc = row.get("doc")
                if isinstance(doc, dict):
                    name = ids.parse(str(doc["_id"])).name
                    self._learn_request(name, doc)
            challenges = self.db.all_docs(
                startkey="challenge:", endkey="challenge:\ufff0", include_docs=True
            )["rows"]
            for row in challenges:
                apply_challenge_doc(self.challenges, row["id"], row.get("doc"), False)
            self.fetch_missing_states()
            for name in sorted(set(self._requests) | set(self._held)):
                self.reconcile(name)

    def write_status_file(self) -> None:
        """Write ``<state_dir>/agent-status.json`` atomically (no secrets in it).

        Not under the agent's lock: a reload hook may hold it for its whole timeout, and the status
        (like the heartbeat, written by the same thread) must not wait for that.
        """
        body = self.status()
        path = self.paths.status_file
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc.strerror)

    def status(self) -> JSONDict:
        """What the agent knows right now (the status file's content)."""
        stats: FollowerStats | None = self.follower.stats if self.follower is not None else None
        return {
            "server": self.config.server,
            "agent_version": __version__,
            "pid": os.getpid(),
            "started_at": format_timestamp(self._started_at),
            "updated_at": format_timestamp(_now()),
            "database": self.db.url,
            "responder_url": self.responder_url,
            "drift_repairs": self.drift_repairs,
            "last_heartbeat": format_timestamp(self.reporter.last_heartbeat)
            if self.reporter.last_heartbeat
            else None,
            "report_error": self.reporter.last_error or None,
            "follower": None
            if stats is None
            else {
                "applied": stats.applied,
                "connects": stats.connects,
                "failures": stats.failures,
                "last_error": stats.last_error or None,
                "caught_up": stats.caught_up.is_set(),
            },
            # dict() copies atomically under the GIL; the loop may be adding a report meanwhile.
            "credentials": {name: report.to_json() for name, report in sorted(dict(self._reports).items())},
        }

    # -- running ----------------------------------------------------------------------------------

    def run(self, stop_event: threading.Event, *, ready: Callable[[], None] | None = None) -> None:
        """Serve challenges, follow the feed, watch the files and report, until ``stop_event`` is set."""
        self.paths.data_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.host_keys  # noqa: B018 - fail at start, not at the first deploy, when the host key is bad
        self.load_held()
        if self.config.responder_host is not None:
            self.responder = Responder(
                self.challenges, self.config.responder_host, self.config.responder_port
            )
            try:
                self.responder.start()
            except OSError as exc:
                where = f"{self.config.responder_host}:{self.config.responder_port}"
                raise ConfigError(
                    f"cannot listen on {where} for HTTP-01: {exc.strerror or exc}", field="responder.listen"
                ) from None
        checkpoint: BatchingCheckpoint | None = None
        try:
            self.reporter.start()
            checkpoint = BatchingCheckpoint(
                self.paths.checkpoint_file,
                before_save=self.commit_staged,
                interval_s=self._checkpoint_s,
            )
            if checkpoint.load() is not None:
                self._snapshot_until_done(stop_event)
            self.follower = ChangesFollower(
                self.db,
                self.handle,
                checkpoint,
                stop_event=stop_event,
                on_caught_up=partial(self._on_caught_up, checkpoint),
            )
            if ready is not None:
                ready()
            periodic = threading.Thread(
                target=self._periodic, args=(stop_event,), name="agent-periodic", daemon=True
            )
            periodic.start()
            self.follower.run()
        finally:
            if self.follower is not None:
                self.follower.stop()
            if checkpoint is not None:
                checkpoint.flush()
            self._wake_periodic.set()  # the periodic thread sees stop_event and ends
            with self._lock:
                self._watch = False  # no watcher starts from now on
            if self._watcher is not None:
                self._watcher.stop()  # not under the lock: its thread may be waiting for it
            self._live_checks.shutdown(wait=False, cancel_futures=True)
            self.reporter.stop()
            if self.responder is not None:
                self.responder.stop()

    def _snapshot_until_done(self, stop_event: threading.Event) -> None:
        failures = 0
        while not stop_event.is_set():
            try:
                self.snapshot()
                return
            except NotFound:
                # No design document (or view) on this database: replay the whole feed instead.
                log.warning("%s has no credentials_by_server view; reading the whole feed", self.db)
                self.paths.checkpoint_file.unlink(missing_ok=True)
                return
            except CouchError as exc:
                delay = FOLLOW_BACKOFF[min(failures, len(FOLLOW_BACKOFF) - 1)]
                failures += 1
                log.warning(
                    "cannot read what this host holds from %s: %s; retrying in %.1fs", self.db, exc, delay
                )
                stop_event.wait(delay)

    def _periodic(self, stop_event: threading.Event) -> None:
        # A backstop for missed file events, and the status file's refresh.
        while True:
            self._wake_periodic.wait(min(30.0, self.config.heartbeat_interval))
            self._wake_periodic.clear()
            if stop_event.is_set():
                return
            try:
                self._start_watching()
                if self._need_state and not self.catching_up():
                    self.fetch_missing_states()  # the read at catch-up failed and no change came since
                self.check_drift()
            except Exception:  # keep checking; the next round may succeed
                log.exception("periodic check failed")
            self.reporter.status_changed()


def _check_links(chain: Iterable[bytes], when: datetime) -> None:
    """Each certificate valid at ``when`` and signed by the next one (the last one's issuer is not here)."""
    certs = [load_certificate(pem) for pem in chain]
    for cert in certs:
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise DeployError(
                f"certificate {cert.subject.rfc4514_string()} is not valid now (valid from "
                f"{format_timestamp(cert.not_valid_before_utc)} "
                f"to {format_timestamp(cert.not_valid_after_utc)})"
            )
    for cert, issuer in itertools.pairwise(certs):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise DeployError(
                f"certificate {cert.subject.rfc4514_string()} is not issued by the next certificate in the "
                f"chain ({issuer.subject.rfc4514_string()}): {exc or 'bad signature'}"
            ) from None


def open_database(config: AgentConfig) -> Database:
    """The database the agent follows, with its credentials."""
    client = CouchClient(config.url, user=config.user, password=config.password)
    return client.db(config.db)
