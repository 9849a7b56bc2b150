"""A thin CouchDB client on httpx, written to Apache CouchDB 3 semantics.

Why not a PyPI client: the maintained ones are few, and each needed workarounds on pouchdb-server
(text/plain replies, gzip-buffered feeds, bodies stored as ``{}`` without a JSON content type). The
part of the HTTP API certstore uses is small, so a client of our own keeps every header and every
error under our control.

Every request sends ``Accept: application/json``; every body is JSON with its content type; feeds
send ``Accept-Encoding: identity``. Connection errors and 5xx replies are retried by an explicit
backoff table. 401/403/404/409 become typed errors that carry the document id.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from store.errors import Conflict, CouchError, CouchUnreachable, Forbidden, NotFound, Unauthorized

log = logging.getLogger(__name__)

JSONDict = dict[str, Any]

#: Seconds to wait before each retry of a failed request; its length is the number of retries.
RETRY_BACKOFF: tuple[float, ...] = (0.1, 0.3, 1.0, 2.0)

_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


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


def _error_for(status: int, message: str, *, doc_id: str | None, reason: str, url: str) -> CouchError:
    kinds: dict[int, type[CouchError]] = {
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        412: Conflict,
    }
    return kinds.get(status, CouchError)(message, status=status, doc_id=doc_id, reason=reason, url=url)


class CouchClient:
    """One CouchDB server. ``url`` may carry ``user:password@``; ``auth`` picks basic or cookie."""

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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parsed = ServerURL.parse(url)
        self.server = ServerURL(parsed.url, user or parsed.user, password or parsed.password)
        self.url = self.server.url
        self.auth_mode = auth
        self.backoff = tuple(backoff)
        self._sleep = sleep
        self._timeout = timeout
        basic = None
        if auth == "basic" and self.server.user is not None:
            basic = httpx.BasicAuth(self.server.user, self.server.password or "")
        self._http = httpx.Client(
            base_url=self.url,
            auth=basic,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )
        self._transport = transport
        self._logged_in = False

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CouchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _login(self) -> None:
        """Cookie auth: POST ``/_session``; httpx keeps the AuthSession cookie."""
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
        for attempt in range(len(self.backoff) + 1):
            try:
                resp = self._http.request(
                    method, path, content=content, params=_encode_params(params), headers=_JSON_HEADERS
                )
            except httpx.HTTPError as exc:
                if attempt < len(self.backoff):
                    self._sleep(self.backoff[attempt])
                    continue
                raise CouchUnreachable(
                    f"cannot reach CouchDB at {self.url}: {_describe(exc)}", doc_id=doc_id, url=self.url
                ) from None
            if resp.status_code >= 500 and attempt < len(self.backoff):
                log.debug("%s: HTTP %s, retrying", where, resp.status_code)
                self._sleep(self.backoff[attempt])
                continue
            return self._decode(resp, where, doc_id)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _decode(self, resp: httpx.Response, where: str, doc_id: str | None) -> Any:
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = None
        if resp.status_code < 400:
            if body is None and resp.content:
                raise CouchError(f"{where}: the reply is not JSON", status=resp.status_code, url=self.url)
            return body
        error = reason = ""
        if isinstance(body, dict):
            error = str(body.get("error", ""))
            reason = str(body.get("reason", ""))
        detail = ": ".join(p for p in (error, reason) if p) or resp.reason_phrase
        subject = f" (document {doc_id})" if doc_id else ""
        raise _error_for(
            resp.status_code,
            f"{where}{subject}: HTTP {resp.status_code} {detail}",
            doc_id=doc_id,
            reason=reason or error,
            url=self.url,
        )

    @contextmanager
    def feed(
        self, path: str, params: Mapping[str, Any], *, read_timeout: float, feed: Feed | None = None
    ) -> Iterator[Feed]:
        """Open a streaming GET (a continuous feed) on a connection of its own; no retries here.

        Another thread may call :meth:`Feed.interrupt` on ``feed`` at any moment, even before the
        server has sent its headers, to end a blocked read at once.
        """
        if self.auth_mode == "cookie" and not self._logged_in:
            self._login()
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        timeout = httpx.Timeout(self._timeout, read=read_timeout)
        feed = feed or Feed()
        # A client of its own: a fresh connection, so the trace hook sees the socket being made.
        client = httpx.Client(
            base_url=self.url,
            auth=self._http.auth,
            cookies=self._http.cookies,
            transport=self._transport,
            follow_redirects=False,
        )
        try:
            with client.stream(
                "GET",
                path,
                params=_encode_params(params),
                headers=headers,
                timeout=timeout,
                extensions={"trace": feed._trace},
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._decode(resp, f"GET {self.url}{path}", None)
                feed.response = resp
                yield feed
        except httpx.HTTPError as exc:
            raise CouchUnreachable(f"feed from {self.url} broke: {_describe(exc)}", url=self.url) from None
        finally:
            client.close()

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
        self.response: httpx.Response | None = None
        self._stream: Any = None
        self._interrupted = False
        self._lock = threading.Lock()

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        # httpcore reports the network stream it made; keep it, to shut its socket down on interrupt.
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            with self._lock:
                self._stream = info.get("return_value")
                interrupted = self._interrupted
            if interrupted:
                self._shutdown()

    def lines(self) -> Iterator[str]:
        """The response's lines (empty ones are heartbeats)."""
        if self.response is None:
            return iter(())
        return self.response.iter_lines()

    def interrupt(self) -> None:
        """End any read in progress (from another thread); the reader then sees a broken feed."""
        with self._lock:
            self._interrupted = True
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            stream = self._stream
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


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


def _describe(exc: httpx.HTTPError) -> str:
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
