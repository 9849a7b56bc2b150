"""The HTTP-01 responder: answers ``/.well-known/acme-challenge/<token>`` from an in-memory map.

Every agent runs one. The map is fed by the agent's changes loop from the replicated
``challenge:<token>`` documents (:func:`apply_challenge_doc`), never from disk, so whichever server the
CA's validation request lands on answers it.

The server is deliberately small and strict:

- ``GET``/``HEAD`` of exactly ``/.well-known/acme-challenge/<token>`` with ``token`` matching
  ``[A-Za-z0-9_-]{16,128}`` answers ``200 text/plain`` with the key authorization; anything else is
  ``404`` (unknown token, bad syntax, another path) and any other method ``405``. The request target is
  matched as received: no percent-decoding, no dot-segment removal, so ``%2e%2e`` or ``..`` can never
  reach a token. A request target carrying a query string is refused with ``404``: a CA never sends
  one (RFC 8555 section 8.3 builds the URL from the token alone), and refusing it means one token has
  exactly one URL.
- Only key authorizations of the form ``<token>.<JWK SHA-256 thumbprint>`` (base64url, 43 characters)
  are ever stored, so nothing but that can be served.
- Slow or stuck clients cannot pin threads: every socket read has a timeout, a connection older than
  ``max_connection_s`` is shut down (this also ends clients that trickle one byte at a time), and at
  most ``max_connections`` connections are handled at once (more are closed on accept).
- Requests are logged at DEBUG only: the CA and scanners hit this port and INFO lines would be noise.
"""

from __future__ import annotations

import logging
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from agent.errors import InvalidChallenge
from store import ids
from store.couch import Database
from store.documents import AcmeChallenge
from store.errors import ValidationError
from store.follower import ChangesFollower, MemoryCheckpoint
from store.names import challenge_token_problem, key_authorization_problem, show

log = logging.getLogger(__name__)

#: The URL path prefix RFC 8555 section 8.3 puts in front of the token.
CHALLENGE_PATH_PREFIX = "/.well-known/acme-challenge/"

# RFC 9110 section 5.6.2 "token": what a request method may be made of.
_METHOD_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def is_valid_token(token: str) -> bool:
    """Whether ``token`` has the syntax of an ACME challenge token (base64url, 16 to 128 characters)."""
    return challenge_token_problem(token) is None


def check_challenge(token: str, key_authorization: str) -> None:
    """Raise :class:`InvalidChallenge` unless ``key_authorization`` is ``<token>.<thumbprint>``.

    The rules are store/names.py's, the same the document model applies to ``challenge:`` documents;
    the map checks before storing and the self-check before polling.
    """
    problem = challenge_token_problem(token)
    if problem is not None:
        raise InvalidChallenge(f"challenge token {show(token)} {problem}", field="token")
    problem = key_authorization_problem(key_authorization, token)
    if problem is not None:
        raise InvalidChallenge(
            f"key authorization for token {short_token(token)} {problem}", field="key_authorization"
        )


def short_token(token: str) -> str:
    """The first characters of a token, enough to tell tokens apart in a message."""
    return token[:8] + "…" if len(token) > 8 else token


# --- the map -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    key_authorization: str
    expires: datetime | None


class ChallengeMap:
    """Token → key authorization, shared by the changes loop (writer) and the server threads (readers).

    Expired entries are never served and are dropped when next seen. ``clock`` returns an aware
    datetime; tests pass their own.
    """

    def __init__(self, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def put(self, token: str, key_authorization: str, expires: datetime | None = None) -> None:
        """Serve ``key_authorization`` for ``token`` until ``expires`` (``None``: until removed).

        Raises :class:`InvalidChallenge` for a malformed token or key authorization, or a naive
        ``expires`` (it could not be compared with the clock without guessing a time zone).
        """
        check_challenge(token, key_authorization)
        if expires is not None and expires.utcoffset() is None:
            raise InvalidChallenge(f"expiry of token {short_token(token)} has no time zone", field="expires")
        with self._lock:
            self._entries[token] = _Entry(key_authorization, expires)

    def remove(self, token: str) -> bool:
        """Stop serving ``token``; whether it was there."""
        with self._lock:
            return self._entries.pop(token, None) is not None

    def get(self, token: str) -> str | None:
        """The key authorization to serve for ``token``, or ``None`` (unknown or expired)."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if entry.expires is not None and entry.expires <= self._clock():
                del self._entries[token]
                return None
            return entry.key_authorization

    def tokens(self) -> list[str]:
        """The tokens currently served (expired ones are dropped), sorted."""
        now = self._clock()
        with self._lock:
            for token in [t for t, e in self._entries.items() if e.expires is not None and e.expires <= now]:
                del self._entries[token]
            return sorted(self._entries)


# --- feeding the map from challenge documents ---------------------------------------------------


def token_from_doc_id(doc_id: str) -> str | None:
    """The token of a ``challenge:<token>`` id, or ``None`` if ``doc_id`` is not a valid challenge id."""
    try:
        parsed = ids.parse(doc_id)
    except ValidationError:
        return None
    return parsed.name if parsed.kind == ids.KIND_CHALLENGE else None


def apply_challenge_doc(
    challenges: ChallengeMap, doc_id: str, doc: Mapping[str, Any] | None, deleted: bool
) -> bool:
    """Bring ``challenges`` in line with one change of the changes feed; whether the change was used.

    A valid ``challenge:<token>`` document (checked by the shared model,
    :class:`store.documents.AcmeChallenge`) is served until its ``expires``; a deletion (``deleted``, a
    ``None`` body or ``_deleted``) stops serving the token parsed from the id. Ids of other documents
    are skipped silently. A challenge document that is malformed, carries a ``token`` field other than
    the token in its id, or whose key authorization is not ``<token>.<thumbprint>`` is logged as a
    warning and never served; an earlier version of it is dropped too, because only the current
    document is the truth.
    """
    token = token_from_doc_id(doc_id)
    if token is None:
        if doc_id.startswith("challenge:"):
            log.warning("ignoring a challenge document with a malformed id %s", show(doc_id[:160]))
        return False
    if deleted or doc is None or doc.get("_deleted") is True:
        challenges.remove(token)
        return True
    try:
        if doc.get("_id", doc_id) != doc_id:
            raise InvalidChallenge("the body's _id is not the changed id", field="_id", doc_id=doc_id)
        # The model keys a challenge by its id; a writer that also stores the token must agree with it.
        if doc.get("token", token) != token:
            raise InvalidChallenge("token does not match the document id", field="token", doc_id=doc_id)
        model = AcmeChallenge.from_doc({**doc, "_id": doc_id})
        challenges.put(token, model.key_authorization, model.expires)
    except ValidationError as exc:
        challenges.remove(token)
        log.warning("not serving challenge document %s: %s", doc_id, exc)
        return False
    return True


def challenge_follower(db: Database, challenges: ChallengeMap) -> ChangesFollower:
    """A follower of ``db`` that keeps ``challenges`` equal to its challenge documents.

    It starts from the beginning of the feed each time (challenge documents are few and short-lived),
    so it needs no checkpoint; the agent's own loop feeds the same map with the same function.
    """
    return ChangesFollower(
        db,
        lambda change: apply_challenge_doc(challenges, change.id, change.doc, change.deleted),
        MemoryCheckpoint(),
    )


# --- the HTTP server ---------------------------------------------------------------------------


def token_from_path(path: str) -> str | None:
    """The token a request target asks for, or ``None``: the target is matched exactly as received."""
    if not path.startswith(CHALLENGE_PATH_PREFIX):
        return None
    token = path[len(CHALLENGE_PATH_PREFIX) :]
    # A query string ("?") or anything else outside the token alphabet fails the match.
    return token if is_valid_token(token) else None


class _Handler(BaseHTTPRequestHandler):
    """One connection: GET/HEAD of a challenge URL, nothing else."""

    server: _ResponderServer
    # HTTP/1.1 keeps connections open between requests; every reply sets Content-Length.
    protocol_version = "HTTP/1.1"
    # Buffer the reply so headers and body leave in one send: as two sends, Nagle's algorithm holds
    # the body until the client's delayed ACK of the headers (about 40 ms per request on Linux).
    wbufsize = 4096
    server_version = "certstore-responder"
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s\n"

    def version_string(self) -> str:
        # The stdlib appends the Python version; scanners need not learn it.
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.connected_at = time.monotonic()
        # Every read and write times out, so a silent client gives its thread back.
        self.connection.settimeout(self.server.read_timeout_s)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command in ("GET", "HEAD"):
            # A body on GET/HEAD is never read; close afterwards so it is not parsed as a request.
            if "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
                self.close_connection = True
            return True
        # Any other method: reply here and tell the caller to stop, so the stdlib's 501 never happens.
        # The body (if any) is not read, hence the close.
        self.close_connection = True
        if _METHOD_RE.fullmatch(self.command) is None:
            self.send_error(400, "Bad request method")
        else:
            self._reply(405, b"405 Method Not Allowed\n", body=True, extra={"Allow": "GET, HEAD"})
        return False

    def handle_expect_100(self) -> bool:
        # Never invite a request body: nothing here reads one.
        return True

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        token = token_from_path(self.path)
        key_authorization = self.server.challenges.get(token) if token is not None else None
        if key_authorization is None:
            self._reply(404, b"404 Not Found\n", body=body)
        else:
            self._reply(200, key_authorization.encode("ascii"), body=body)

    def _reply(
        self, code: int, payload: bytes, *, body: bool, extra: Mapping[str, str] | None = None
    ) -> None:
        if time.monotonic() - self.connected_at > self.server.max_connection_s / 2:
            # Ask a long-lived keep-alive client to reconnect before the age limit cuts it off mid-request.
            self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(payload)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)


class _ResponderServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap, a connection age limit and a prompt shutdown."""

    daemon_threads = True
    # Don't join handler threads on close: stop() shuts their sockets instead, which ends them at once.
    block_on_close = False
    # The stdlib default backlog of 5 drops SYNs under a burst of new connections (1 s retransmits).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        challenges: ChallengeMap,
        *,
        read_timeout_s: float,
        max_connection_s: float,
        max_connections: int,
    ) -> None:
        self.address_family = family
        self.challenges = challenges
        self.read_timeout_s = read_timeout_s
        self.max_connection_s = max_connection_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, float] = {}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall; skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Over the cap: drop rather than queue, so a flood cannot create unbounded threads.
            log.debug("connection limit reached, closing connection from %s", client_address)
            self.shutdown_request(request)
            return
        with self._conn_lock:
            self._connections[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._conn_lock:
            if self._connections.pop(request, None) is not None:
                self._slots.release()

    def service_actions(self) -> None:
        # Called by serve_forever on every poll: end connections that have lived too long. A read
        # timeout alone does not stop a client that sends one byte just before each timeout.
        limit = time.monotonic() - self.max_connection_s
        with self._conn_lock:
            stale = [conn for conn, started in self._connections.items() if started < limit]
        for conn in stale:
            log.debug("closing a connection older than %.1f s", self.max_connection_s)
            _shut(conn)

    def close_connections(self) -> None:
        """Shut every open connection so its handler thread ends now instead of at its next timeout."""
        with self._conn_lock:
            open_now = list(self._connections)
        for conn in open_now:
            _shut(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-reply are routine on a public port; never print tracebacks to stderr.
        log.debug("error while handling a request from %s", client_address, exc_info=True)


def _shut(conn: socket.socket) -> None:
    # shutdown(), not close(): the handler thread still owns the descriptor and closes it itself.
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other side or by its handler


# A listener bound to every interface is reached locally through loopback.
_WILDCARD_TO_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


class Responder:
    """The HTTP-01 server, run in a background thread.

    ``host``/``port`` are where to listen (``port=0`` picks a free port, read back from
    :attr:`port`); an agent passes its public address and port 80. Use as a context manager or call
    :meth:`start` and :meth:`stop`.
    """

    #: How often the serve loop wakes to reap old connections and notice stop(); bounds stop()'s latency.
    POLL_INTERVAL_S = 0.05

    def __init__(
        self,
        challenges: ChallengeMap,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        read_timeout_s: float = 5.0,
        max_connection_s: float = 30.0,
        max_connections: int = 256,
    ) -> None:
        self.challenges = challenges
        self._host = host
        self._port = port
        self._read_timeout_s = read_timeout_s
        self._max_connection_s = max_connection_s
        self._max_connections = max_connections
        self._server: _ResponderServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start serving in a daemon thread; raises ``OSError`` if the address is taken."""
        if self._server is not None:
            raise RuntimeError("responder already started")
        family = socket.getaddrinfo(
            self._host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][0]
        server = _ResponderServer(
            (self._host, self._port),
            family,
            self.challenges,
            read_timeout_s=self._read_timeout_s,
            max_connection_s=self._max_connection_s,
            max_connections=self._max_connections,
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self.POLL_INTERVAL_S},
            name=f"acme-responder:{server.server_port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        log.debug("HTTP-01 responder listening on %s", self.url)

    def stop(self) -> None:
        """Stop accepting, end open connections, close the socket; returns within about a poll interval."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()  # waits for serve_forever to return, so nothing is accepted after this
        server.close_connections()
        server.server_close()
        thread.join()

    @property
    def port(self) -> int:
        """The bound port (the free one chosen when started with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("responder not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        """``http://host:port`` of the listener, as :func:`agent.selfcheck.confirm_served` takes it."""
        if self._server is None:
            raise RuntimeError("responder not started")
        host = self._server.server_name
        host = _WILDCARD_TO_LOOPBACK.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def __enter__(self) -> Responder:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
