"""A thin CouchDB client on the standard library's ``http.client``, written to CouchDB 3 semantics.

Why not a PyPI client: the maintained ones are few, and each needed workarounds on pouchdb-server
(text/plain replies, gzip-buffered feeds, bodies stored as ``{}`` without a JSON content type). The
part of the HTTP API certstore uses is small, so a client of our own keeps every header and every
error under our control.

Why not httpx (which this client used before): the per-host agent imports this module and little
else, and httpx with httpcore, h11, anyio and certifi cost it about 2.5 MB of resident memory for
features it never uses (async, HTTP/2, proxies). ``http.client`` gives keep-alive connections and
chunked replies; the pool and the retries are the few lines below.

Every request sends ``Accept: application/json``; every body is JSON with its content type; replies
are asked for uncompressed (``Accept-Encoding: identity``). Connection errors and 5xx replies are
retried by an explicit backoff table. 401/403/404/409/412 become typed errors that carry the document
id. Redirects are not followed.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from store.errors import Conflict, CouchError, CouchUnreachable, Forbidden, NotFound, Unauthorized

log = logging.getLogger(__name__)

JSONDict = dict[str, Any]

#: Seconds to wait before each retry of a failed request; its length is the number of retries.
RETRY_BACKOFF: tuple[float, ...] = (0.1, 0.3, 1.0, 2.0)

#: Idle keep-alive connections a client keeps for reuse (more are closed when handed back).
MAX_IDLE_CONNECTIONS = 4

#: Makes a new, not yet connected HTTP(S) connection to the server (the test seam).
ConnectionFactory = Callable[[], http.client.HTTPConnection]

# http.client adds "Accept-Encoding: identity" by itself; feeds say it anyway, as they must not be gzipped.
_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
_FEED_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}
_FEED_READ_SIZE = 65536

#: What a failed exchange raises: socket errors and timeouts (OSError) or a garbled reply.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class ServerURL:
    """A CouchDB base URL split into the part that may be shown and the credentials."""

    url: str
    user: str | None
    password: str | None

    @classmethod
    def parse(cls, raw: str) -> ServerURL:
        """Split ``http://user:pw@host:port/`` into a credential-free URL and its credentials."""
        parts = urlsplit(raw.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CouchError(f"not a CouchDB URL: {redact(raw)!r} (expected http[s]://host:port)")
        try:
            port = parts.port
        except ValueError as exc:
            raise CouchError(f"not a CouchDB URL: {redact(raw)!r}: {exc}") from None
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host if port is None else f"{host}:{port}"
        clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(clean, user, password)

    def with_credentials(self) -> str:
        """The URL with the credentials embedded (for ``_replicator`` documents, never for logs)."""
        if self.user is None:
            return self.url
        parts = urlsplit(self.url)
        cred = quote(self.user, safe="")
        if self.password is not None:
            cred += ":" + quote(self.password, safe="")
        return urlunsplit((parts.scheme, f"{cred}@{parts.netloc}", parts.path, "", ""))


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` so it can go into a message or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{parts.username}:***@{netloc}", parts.path, parts.query, ""))


def doc_path(doc_id: str) -> str:
    """The URL path segment for a document id; ``_design/`` and ``_local/`` keep their slash."""
    for prefix in ("_design/", "_local/"):
        if doc_id.startswith(prefix):
            return prefix + quote(doc_id[len(prefix) :], safe="")
    return quote(doc_id, safe="")


def new_connection(url: str, timeout: float) -> http.client.HTTPConnection:
    """An unconnected connection to the host of ``url`` (credential-free, as in :class:`ServerURL`).

    ``timeout`` bounds the connect and then each read and write. ``https`` URLs verify the server's
    certificate and host name against the system's trust store.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""  # without the brackets of an IPv6 literal, as http.client wants it
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=_tls_context())
    return http.client.HTTPConnection(host, parts.port, timeout=timeout)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # One context for the process: loading the trust store is slow and holds memory.
    return ssl.create_default_context()


def _error_for(status: int, message: str, *, doc_id: str | None, reason: str, url: str) -> CouchError:
    kinds: dict[int, type[CouchError]] = {
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        412: Conflict,
    }
    return kinds.get(status, CouchError)(message, status=status, doc_id=doc_id, reason=reason, url=url)


class _Reply(NamedTuple):
    """A reply read to its end."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


def _exchange(
    conn: http.client.HTTPConnection, method: str, target: str, headers: Mapping[str, str], body: bytes | None
) -> _Reply:
    """One request and its whole reply on ``conn`` (which connects first if it has no socket)."""
    conn.request(method, target, body=body, headers=dict(headers))
    resp = conn.getresponse()
    data = resp.read()  # read to the end: only then may the connection carry another request
    return _Reply(resp.status, resp.reason, resp.msg, data)


class CouchClient:
    """One CouchDB server. ``url`` may carry ``user:password@``; ``auth`` picks basic or cookie.

    One client may be used from several threads at once: each request takes an idle keep-alive
    connection from a small pool (or makes one) and hands it back when the reply is read.
    ``connect`` makes the connections (by default :func:`new_connection`; tests pass fakes).
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        auth: Literal["basic", "cookie"] = "basic",
        timeout: float = 30.0,
        backoff: Sequence[float] = RETRY_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
        connect: ConnectionFactory | None = None,
    ) -> None:
        parsed = ServerURL.parse(url)
        self.server = ServerURL(parsed.url, user or parsed.user, password or parsed.password)
        self.url = self.server.url
        self.auth_mode = auth
        self.backoff = tuple(backoff)
        self._sleep = sleep
        self._connect: ConnectionFactory = connect or functools.partial(new_connection, self.url, timeout)
        # The server's path prefix (CouchDB behind a proxy at /couch) goes before every request path.
        self._prefix = urlsplit(self.url).path
        self._basic: str | None = None
        if auth == "basic" and self.server.user is not None:
            token = f"{self.server.user}:{self.server.password or ''}".encode()
            self._basic = "Basic " + base64.b64encode(token).decode("ascii")
        self._cookie: str | None = None  # the AuthSession value (cookie auth)
        self._logged_in = False
        self._idle: list[http.client.HTTPConnection] = []
        self._pool_lock = threading.Lock()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when handed back."""
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> CouchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _login(self) -> None:
        """Cookie auth: POST ``/_session``; the reply's ``AuthSession`` cookie is kept and sent."""
        if self.server.user is None:
            raise Unauthorized(f"{self.url}: cookie auth needs a user name", status=401, url=self.url)
        body = {"name": self.server.user, "password": self.server.password or ""}
        self._send("POST", "/_session", json_body=body, doc_id=None, login=False)
        self._logged_in = True

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        doc_id: str | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON reply; raises a typed :class:`CouchError`."""
        if self.auth_mode == "cookie" and not self._logged_in:
            self._login()
        try:
            return self._send(method, path, json_body=json_body, params=params, doc_id=doc_id)
        except Unauthorized:
            if self.auth_mode != "cookie":
                raise
            # The session cookie expired: log in again once, then give the server's verdict.
            self._login()
            return self._send(method, path, json_body=json_body, params=params, doc_id=doc_id)

    def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        doc_id: str | None,
        login: bool = True,
    ) -> Any:
        content = None if json_body is None else json.dumps(json_body).encode()
        where = f"{method} {self.url}{path}"
        target = self._target(path, params)
        headers = self._headers(_JSON_HEADERS)
        for attempt in range(len(self.backoff) + 1):
            try:
                reply = self._pooled_exchange(method, target, headers, content)
            except http.client.InvalidURL as exc:
                # A path the caller did not quote: no retry can fix it.
                raise CouchError(f"{where}: {exc}", doc_id=doc_id, url=self.url) from None
            except _TRANSPORT_ERRORS as exc:
                if attempt < len(self.backoff):
                    self._sleep(self.backoff[attempt])
                    continue
                raise CouchUnreachable(
                    f"cannot reach CouchDB at {self.url}: {_describe(exc)}", doc_id=doc_id, url=self.url
                ) from None
            self._remember_cookie(reply.headers)
            if reply.status >= 500 and attempt < len(self.backoff):
                log.debug("%s: HTTP %s, retrying", where, reply.status)
                self._sleep(self.backoff[attempt])
                continue
            return self._decode(reply, where, doc_id)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _target(self, path: str, params: Mapping[str, Any] | None) -> str:
        """The request target: prefix, path (already quoted by the caller) and query string."""
        encoded = _encode_params(params)
        # quote, not urlencode's default quote_plus: a space goes as %20, which means a space to any
        # server, where "+" means one only by the HTML-form convention.
        query = urlencode(encoded, quote_via=quote) if encoded else ""
        return self._prefix + path + ("?" + query if query else "")

    def _headers(self, base: Mapping[str, str]) -> dict[str, str]:
        headers = dict(base)
        if self._basic is not None:
            headers["Authorization"] = self._basic
        cookie = self._cookie
        if cookie is not None:
            headers["Cookie"] = f"AuthSession={cookie}"
        return headers

    def _remember_cookie(self, headers: http.client.HTTPMessage) -> None:
        """Keep the ``AuthSession`` cookie of a reply (the login, and CouchDB's refreshes of it)."""
        for header in headers.get_all("Set-Cookie") or ():
            name, _, rest = header.partition("=")
            if name.strip() == "AuthSession":
                value = rest.split(";", 1)[0].strip()
                self._cookie = value or None  # an empty value is the server ending the session

    def _pooled_exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> _Reply:
        """One exchange on an idle connection of the pool, or on a new one."""
        conn, reused = self._take()
        try:
            try:
                reply = _exchange(conn, method, target, headers, body)
            except ConnectionError:
                if not reused:
                    raise
                # CouchDB closes keep-alive connections that sit idle, so a reused one that is reset
                # or gets no reply was most likely dead before we sent anything. Once more on a fresh
                # connection, not counted against the backoff table.
                conn.close()
                log.debug("%s %s: kept-alive connection was closed, reconnecting", method, target)
                conn = self._connect()
                reply = _exchange(conn, method, target, headers, body)
        except BaseException:
            conn.close()  # its state is unknown (half a reply may be waiting): never reuse it
            raise
        self._give_back(conn)
        return reply

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection and True, or a new (not yet connected) one and False."""
        with self._pool_lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        # A reply with "Connection: close" left the connection without a socket: nothing to keep.
        if conn.sock is not None:
            with self._pool_lock:
                if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    return
        conn.close()

    def _decode(self, reply: _Reply, where: str, doc_id: str | None) -> Any:
        try:
            body = json.loads(reply.body) if reply.body else None
        except ValueError:
            body = None
        if reply.status < 400:
            if body is None and reply.body:
                raise CouchError(f"{where}: the reply is not JSON", status=reply.status, url=self.url)
            return body
        error = reason = ""
        if isinstance(body, dict):
            error = str(body.get("error", ""))
            reason = str(body.get("reason", ""))
        phrase = reply.reason or http.client.responses.get(reply.status, "")
        detail = ": ".join(p for p in (error, reason) if p) or phrase
        subject = f" (document {doc_id})" if doc_id else ""
        raise _error_for(
            reply.status,
            f"{where}{subject}: HTTP {reply.status} {detail}",
            doc_id=doc_id,
            reason=reason or error,
            url=self.url,
        )

    @contextmanager
    def feed(
        self, path: str, params: Mapping[str, Any], *, read_timeout: float, feed: Feed | None = None
    ) -> Iterator[Feed]:
        """Open a streaming GET (a continuous feed) on a connection of its own; no retries here.

        ``read_timeout`` bounds each read once connected (the connect itself has the client's
        timeout). Another thread may call :meth:`Feed.interrupt` on ``feed`` at any moment, even
        before the connection is made, to end a blocked read at once.
        """
        if self.auth_mode == "cookie" and not self._logged_in:
            self._login()
        feed = feed or Feed()
        where = f"GET {self.url}{path}"
        conn = self._connect()  # not pooled: it is held as long as the feed is read
        try:
            try:
                feed._open(conn, read_timeout, self.url)
                conn.request("GET", self._target(path, params), headers=self._headers(_FEED_HEADERS))
                resp = conn.getresponse()
                if resp.status >= 400:
                    self._decode(_Reply(resp.status, resp.reason, resp.msg, resp.read()), where, None)
            except _TRANSPORT_ERRORS as exc:
                raise _feed_broke(self.url, _describe(exc)) from None
            self._remember_cookie(resp.msg)
            feed.response = resp
            yield feed
        finally:
            feed._disconnect()
            conn.close()

    # -- server-level API --------------------------------------------------------------------

    def info(self) -> JSONDict:
        """``GET /``: the server's welcome document."""
        result: JSONDict = self.request("GET", "/")
        return result

    def session(self) -> JSONDict:
        """``GET /_session``: who the server thinks we are (``userCtx``)."""
        result: JSONDict = self.request("GET", "/_session")
        return result

    def all_dbs(self) -> list[str]:
        """Names of all databases (admins only on CouchDB 3)."""
        result: list[str] = self.request("GET", "/_all_dbs")
        return result

    def db(self, name: str) -> Database:
        """A handle on database ``name`` (nothing is sent)."""
        return Database(self, name)

    def put_user(self, name: str, password: str, roles: Sequence[str]) -> JSONDict:
        """Create or replace the ``_users`` document of ``name`` with ``roles``."""
        users = self.db("_users")
        doc_id = f"org.couchdb.user:{name}"
        existing = users.get_or_none(doc_id)
        doc: JSONDict = {
            "_id": doc_id,
            "name": name,
            "type": "user",
            "roles": list(roles),
            "password": password,
        }
        if existing is not None:
            doc["_rev"] = existing["_rev"]
        users.put(doc)
        return doc


class Feed:
    """One open streaming response whose blocked reads another thread can interrupt."""

    def __init__(self) -> None:
        self.response: http.client.HTTPResponse | None = None
        self._url = ""
        self._sock: socket.socket | None = None
        self._interrupted = False
        self._lock = threading.Lock()

    def _open(self, conn: http.client.HTTPConnection, read_timeout: float, url: str) -> None:
        """Connect ``conn`` unless interrupted already, and keep its socket for :meth:`interrupt`."""
        self._url = url
        with self._lock:
            if self._interrupted:
                raise _feed_broke(url, "interrupted")
        conn.connect()
        sock: socket.socket = conn.sock
        sock.settimeout(read_timeout)
        with self._lock:
            self._sock = sock
            interrupted = self._interrupted
        if interrupted:  # interrupt() came while connecting, when there was no socket to shut down
            raise _feed_broke(url, "interrupted")

    def _disconnect(self) -> None:
        # Forget the socket before it is closed, so interrupt() never touches a closed one.
        with self._lock:
            self._sock = None

    def lines(self) -> Iterator[str]:
        """The response's lines without their line ends (empty ones are heartbeats).

        A broken connection, a read timeout or an interrupt raises :class:`CouchUnreachable`; only
        the end of the stream as the server framed it ends the lines quietly.
        """
        resp = self.response
        if resp is None:
            return
        pending = bytearray()
        while True:
            end = pending.find(b"\n")
            if end >= 0:
                line = bytes(pending[:end])
                del pending[: end + 1]
                yield _decode_line(line)
                continue
            try:
                # read1, not readline: HTTPResponse.readline takes a cut-off chunked stream (a broken
                # connection, an interrupt) for its end, read1 raises IncompleteRead.
                data = resp.read1(_FEED_READ_SIZE)
            except (*_TRANSPORT_ERRORS, ValueError) as exc:
                # ValueError: the response was closed under the read.
                raise _feed_broke(self._url, _describe(exc)) from None
            if data:
                pending += data
                continue
            if resp.length:  # a Content-Length reply that stopped short
                raise _feed_broke(self._url, f"the reply ended {resp.length} bytes short")
            if pending:
                yield _decode_line(bytes(pending))
            return

    def interrupt(self) -> None:
        """End any read in progress (from another thread); the reader then sees a broken feed."""
        with self._lock:
            self._interrupted = True
            if self._sock is not None:
                # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop the TLS
                # state under the reading thread's feet. The read wakes up with end-of-file.
                with suppress(OSError):
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


def _encode_params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Query parameters as CouchDB wants them: booleans lowercase, keys/startkey/endkey as JSON."""
    if not params:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key in ("key", "keys", "startkey", "endkey", "start_key", "end_key"):
            out[key] = json.dumps(value)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


def _decode_line(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").removesuffix("\r")


def _feed_broke(url: str, description: str) -> CouchUnreachable:
    return CouchUnreachable(f"feed from {url} broke: {description}", url=url)


def _describe(exc: BaseException) -> str:
    """``ConnectionRefusedError: [Errno 111] Connection refused``, ``TimeoutError: timed out``."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


class Database:
    """One database on a :class:`CouchClient`."""

    def __init__(self, client: CouchClient, name: str) -> None:
        self.client = client
        self.name = name
        self.path = "/" + quote(name, safe="")

    def __repr__(self) -> str:
        return f"Database({self.client.url}{self.path})"

    @property
    def url(self) -> str:
        """The database URL without credentials."""
        return self.client.url + self.path

    # -- database ----------------------------------------------------------------------------

    def exists(self) -> bool:
        """True when the database exists (and we may read it)."""
        try:
            self.client.request("GET", self.path)
        except NotFound:
            return False
        return True

    def create(self, *, exist_ok: bool = True) -> bool:
        """Create the database; returns False when it already existed and ``exist_ok``."""
        try:
            self.client.request("PUT", self.path)
        except Conflict:
            if not exist_ok:
                raise
            return False
        return True

    def delete_database(self) -> None:
        """Delete the whole database."""
        self.client.request("DELETE", self.path)

    def info(self) -> JSONDict:
        """``GET /db``."""
        result: JSONDict = self.client.request("GET", self.path)
        return result

    def get_security(self) -> JSONDict:
        """The ``_security`` object."""
        result: JSONDict = self.client.request("GET", self.path + "/_security")
        return result

    def put_security(self, security: Mapping[str, Any]) -> None:
        """Replace the ``_security`` object."""
        self.client.request("PUT", self.path + "/_security", json_body=dict(security))

    # -- documents ---------------------------------------------------------------------------

    def get(self, doc_id: str, **params: Any) -> JSONDict:
        """Fetch a document; :class:`NotFound` when missing or deleted."""
        result: JSONDict = self.client.request(
            "GET", f"{self.path}/{doc_path(doc_id)}", params=params, doc_id=doc_id
        )
        return result

    def get_or_none(self, doc_id: str, **params: Any) -> JSONDict | None:
        """Fetch a document, or None when it does not exist."""
        try:
            return self.get(doc_id, **params)
        except NotFound:
            return None

    def put(self, doc: JSONDict) -> str:
        """Write ``doc`` (its ``_id`` and, for an update, ``_rev``); sets and returns the new rev."""
        doc_id = str(doc["_id"])
        result = self.client.request("PUT", f"{self.path}/{doc_path(doc_id)}", json_body=doc, doc_id=doc_id)
        doc["_rev"] = result["rev"]
        return str(result["rev"])

    def delete(self, doc_id: str, rev: str) -> str:
        """Delete revision ``rev`` of a document; returns the tombstone's rev."""
        result = self.client.request(
            "DELETE", f"{self.path}/{doc_path(doc_id)}", params={"rev": rev}, doc_id=doc_id
        )
        return str(result["rev"])

    def bulk_docs(self, docs: Sequence[JSONDict], *, new_edits: bool = True) -> list[JSONDict]:
        """``POST _bulk_docs``; per-document results (errors are in the results, not raised)."""
        body: JSONDict = {"docs": list(docs)}
        if not new_edits:
            body["new_edits"] = False
        result: list[JSONDict] = self.client.request("POST", self.path + "/_bulk_docs", json_body=body)
        return result

    def all_docs(self, **params: Any) -> JSONDict:
        """``GET _all_docs`` (``keys`` goes as a POST body, as CouchDB wants for long lists)."""
        keys = params.pop("keys", None)
        if keys is not None:
            result: JSONDict = self.client.request(
                "POST", self.path + "/_all_docs", json_body={"keys": list(keys)}, params=params
            )
            return result
        result = self.client.request("GET", self.path + "/_all_docs", params=params)
        return result

    def view(self, ddoc: str, view: str, **params: Any) -> JSONDict:
        """Query ``_design/<ddoc>/_view/<view>``."""
        path = f"{self.path}/_design/{quote(ddoc, safe='')}/_view/{quote(view, safe='')}"
        result: JSONDict = self.client.request("GET", path, params=params)
        return result

    def changes(self, **params: Any) -> JSONDict:
        """A normal (non-continuous) ``_changes`` request."""
        result: JSONDict = self.client.request("GET", self.path + "/_changes", params=params)
        return result

    # -- _local documents (never replicated: checkpoints, per-replica state) -----------------

    def get_local(self, name: str) -> JSONDict | None:
        """The ``_local/<name>`` document, or None."""
        return self.get_or_none("_local/" + name)

    def put_local(self, name: str, body: Mapping[str, Any], rev: str | None = None) -> str:
        """Write ``_local/<name>`` and return its new rev.

        ``rev`` is the revision being replaced when the caller knows it; without it (or when it is
        stale) the current one is fetched, since ``_local`` docs keep no history worth merging.
        """
        doc: JSONDict = dict(body)
        doc["_id"] = "_local/" + name
        if rev is not None:
            doc["_rev"] = rev
            try:
                return self.put(doc)
            except Conflict:
                pass
        existing = self.get_local(name)
        if existing is not None:
            doc["_rev"] = existing["_rev"]
        else:
            doc.pop("_rev", None)
        return self.put(doc)
