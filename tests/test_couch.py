"""Unit tests for the CouchDB client: fake connections behind its ``connect`` seam, local sockets for feeds.

The fakes are real :class:`http.client.HTTPConnection` objects whose socket is in memory: http.client
writes and parses the bytes, so headers, framing and keep-alive behave as on the wire.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import trustme

from store import couch
from store.couch import CouchClient, Feed, ServerURL, doc_path, new_connection, redact
from store.errors import Conflict, CouchError, CouchUnreachable, Forbidden, NotFound, Unauthorized

# --- fakes behind the seam ---------------------------------------------------------------------


@dataclass
class Request:
    """One request as the fake server received it."""

    method: str
    target: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    connection: int  # which connection (1, 2, ...) carried it

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What the fake server answers; ``body`` is sent as JSON unless ``raw`` is given."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    reason: str | None = None

    def encode(self) -> bytes:
        content = (
            self.raw if self.raw is not None else b"" if self.body is None else json.dumps(self.body).encode()
        )
        reason = self.reason if self.reason is not None else http.client.responses.get(self.status, "")
        lines = [f"HTTP/1.1 {self.status} {reason}", f"Content-Length: {len(content)}"]
        if self.raw is None:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + content


Handler = Callable[[Request], Reply]


class FakeServer:
    """Answers requests with ``handler``; counts connections; can refuse them or drop idle ones."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.connections = 0
        self.refuse = 0  # refuse this many of the next connects
        self.sockets: list[FakeSocket] = []
        self.lock = threading.Lock()

    def connect(self) -> http.client.HTTPConnection:
        return FakeConnection(self)

    def drop_idle_connections(self) -> None:
        """What CouchDB does to keep-alive connections left idle: close them."""
        for sock in self.sockets:
            sock.dropped = True


class FakeSocket:
    """The client's end of a connection to a :class:`FakeServer`."""

    def __init__(self, server: FakeServer, number: int) -> None:
        self.server = server
        self.number = number
        self.sent = bytearray()
        self.dropped = False
        self.closed = False
        self.timeout: float | None = None
        self.shut_down = False

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def makefile(self, mode: str) -> io.BytesIO:
        if self.dropped:
            return io.BytesIO(b"")  # the server had closed it: end of file where the reply should be
        head, _, body = bytes(self.sent).partition(b"\r\n\r\n")
        self.sent.clear()
        request_line, *header_lines = head.decode().split("\r\n")
        method, target, _ = request_line.split(" ")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        request = Request(method, target, headers, body, self.number)
        with self.server.lock:
            self.server.requests.append(request)
        return io.BytesIO(self.server.handler(request).encode())

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def shutdown(self, how: int) -> None:
        self.shut_down = True

    def close(self) -> None:
        self.closed = True


class FakeConnection(http.client.HTTPConnection):
    """An HTTPConnection whose socket is a :class:`FakeSocket`."""

    def __init__(self, server: FakeServer) -> None:
        super().__init__("127.0.0.1", 5984)
        self.server = server

    def connect(self) -> None:
        with self.server.lock:
            self.server.connections += 1
            if self.server.refuse:
                self.server.refuse -= 1
                raise ConnectionRefusedError(111, "Connection refused")
            sock = FakeSocket(self.server, self.server.connections)
            self.server.sockets.append(sock)
        self.sock = sock


def make_client(
    handler: Handler, url: str = "http://admin:s3cret@127.0.0.1:5984", **kw: Any
) -> tuple[CouchClient, FakeServer, list[float]]:
    server = FakeServer(handler)
    sleeps: list[float] = []
    client = CouchClient(url, connect=server.connect, sleep=sleeps.append, **kw)
    return client, server, sleeps


# --- requests ----------------------------------------------------------------------------------


def test_every_request_sends_json_headers_and_basic_auth() -> None:
    def handler(request: Request) -> Reply:
        return Reply(201, {"ok": True, "id": "credential:web", "rev": "1-a"})

    client, server, _ = make_client(handler)
    doc = {"_id": "credential:web", "type": "tls_credential"}
    assert client.db("certstore").put(doc) == "1-a"
    assert doc["_rev"] == "1-a"
    req = server.requests[0]
    assert req.method == "PUT"
    assert req.headers["accept"] == "application/json"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["authorization"] == "Basic YWRtaW46czNjcmV0"  # admin:s3cret
    assert req.headers["host"] == "127.0.0.1:5984"
    assert req.target == "/certstore/credential%3Aweb"
    assert req.json() == {"_id": "credential:web", "type": "tls_credential"}


def test_no_credentials_no_authorization_header() -> None:
    client, server, _ = make_client(
        lambda request: Reply(200, {"couchdb": "Welcome"}), "http://127.0.0.1:5984"
    )
    assert client.info() == {"couchdb": "Welcome"}
    assert "authorization" not in server.requests[0].headers


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (412, Conflict),
        (400, CouchError),
    ],
)
def test_errors_are_typed_and_carry_the_doc_id(status: int, error: type[CouchError]) -> None:
    def handler(request: Request) -> Reply:
        return Reply(status, {"error": "x", "reason": "server says no"})

    client, _, _ = make_client(handler)
    with pytest.raises(error) as info:
        client.db("certstore").get("server:web1")
    assert info.value.doc_id == "server:web1"
    assert info.value.status == status
    assert info.value.reason == "server says no"
    assert "server says no" in str(info.value)
    assert "(document server:web1)" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_an_error_without_a_json_body_gives_the_reason_phrase() -> None:
    client, _, _ = make_client(lambda request: Reply(403, raw=b"<html>no</html>", reason="Go Away"))
    with pytest.raises(Forbidden, match="HTTP 403 Go Away"):
        client.info()
    client, _, _ = make_client(lambda request: Reply(404, raw=b"", reason=""))
    with pytest.raises(NotFound, match="HTTP 404 Not Found"):
        client.info()


def test_a_success_reply_that_is_not_json_is_an_error() -> None:
    client, _, _ = make_client(lambda request: Reply(200, raw=b"<html>a proxy</html>"))
    with pytest.raises(CouchError, match="not JSON") as info:
        client.info()
    assert info.value.status == 200
    client, _, _ = make_client(lambda request: Reply(200, raw=b""))
    assert client.info() is None


def test_redirects_are_not_followed() -> None:
    def handler(request: Request) -> Reply:
        return Reply(301, raw=b"", headers={"Location": "http://elsewhere:5984/"})

    client, server, _ = make_client(handler)
    assert client.info() is None
    assert [r.target for r in server.requests] == ["/"]


def test_5xx_and_connection_errors_are_retried_by_the_backoff_table() -> None:
    calls = {"n": 0}

    def handler(request: Request) -> Reply:
        calls["n"] += 1
        if calls["n"] == 1:
            return Reply(503, {"error": "unavailable"})
        return Reply(200, {"_id": "settings", "_rev": "1-x"})

    client, server, sleeps = make_client(handler, backoff=(0.1, 0.2, 0.3))
    server.refuse = 1
    assert client.db("certstore").get("settings")["_id"] == "settings"
    assert sleeps == [0.1, 0.2]


def test_the_last_5xx_is_raised_as_a_typed_error() -> None:
    client, server, _ = make_client(lambda request: Reply(500, {"error": "boom"}), backoff=(0.0,))
    with pytest.raises(CouchError, match="HTTP 500 boom") as info:
        client.info()
    assert info.value.status == 500
    assert len(server.requests) == 2


def test_unreachable_after_the_last_retry_says_where() -> None:
    client, server, sleeps = make_client(lambda request: Reply(200, {}), backoff=(0.0, 0.0))
    server.refuse = 3
    with pytest.raises(CouchUnreachable) as info:
        client.info()
    assert str(info.value) == (
        "cannot reach CouchDB at http://127.0.0.1:5984: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert info.value.status == 0
    assert sleeps == [0.0, 0.0]


def test_unreachable_real_port_is_described() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = CouchClient(f"http://admin:s3cret@127.0.0.1:{port}", backoff=())
    with pytest.raises(CouchUnreachable, match=r"ConnectionRefusedError: \[Errno \d+\]") as info:
        client.info()
    assert "s3cret" not in str(info.value)


def test_keep_alive_connections_are_reused() -> None:
    client, server, _ = make_client(lambda request: Reply(200, {"ok": True}))
    for _ in range(3):
        client.info()
    assert server.connections == 1
    assert [r.connection for r in server.requests] == [1, 1, 1]


def test_a_connection_the_server_closes_is_not_kept() -> None:
    client, server, _ = make_client(lambda request: Reply(200, {"ok": True}, headers={"Connection": "close"}))
    client.info()
    client.info()
    assert server.connections == 2


def test_a_stale_kept_alive_connection_is_retried_once_without_backoff() -> None:
    client, server, sleeps = make_client(lambda request: Reply(200, {"ok": True}), backoff=(5.0,))
    client.info()
    server.drop_idle_connections()
    assert client.db("certstore").bulk_docs([{"_id": "a"}]) == {"ok": True}
    assert sleeps == []
    assert server.connections == 2
    assert [r.connection for r in server.requests] == [1, 2]
    assert server.requests[1].json() == {"docs": [{"_id": "a"}]}
    assert server.sockets[0].closed


def test_a_fresh_connection_that_fails_uses_the_backoff_table() -> None:
    client, server, sleeps = make_client(lambda request: Reply(200, {"ok": True}), backoff=(0.5, 0.5))
    client.info()
    server.drop_idle_connections()
    server.refuse = 1  # the reconnect after the stale one fails: the server is really gone
    client.info()
    assert sleeps == [0.5]


def test_close_closes_idle_connections() -> None:
    client, server, _ = make_client(lambda request: Reply(200, {"ok": True}))
    with client:
        client.info()
    assert server.sockets[0].closed


def test_concurrent_requests_each_get_their_own_reply() -> None:
    def handler(request: Request) -> Reply:
        time.sleep(0.001)
        return Reply(200, {"path": request.path})

    client, server, _ = make_client(handler)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                name = f"db{n}-{i}"
                assert client.db(name).info() == {"path": f"/{name}"}
        except (AssertionError, CouchError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len(server.requests) == 120
    assert server.connections <= 6


# --- cookie auth -------------------------------------------------------------------------------


def test_cookie_auth_logs_in_once_and_again_when_the_session_expires() -> None:
    log: list[str] = []
    state = {"expired": False, "cookie": "abc"}

    def handler(request: Request) -> Reply:
        log.append(f"{request.method} {request.path}")
        if request.path == "/_session":
            assert request.json() == {"name": "admin", "password": "s3cret"}
            state["cookie"] += "+"
            return Reply(
                200,
                {"ok": True},
                headers={"Set-Cookie": f"AuthSession={state['cookie']}; Version=1; Path=/; HttpOnly"},
            )
        assert "authorization" not in request.headers
        if state["expired"]:
            state["expired"] = False
            return Reply(401, {"error": "unauthorized"})
        assert request.headers["cookie"] == f"AuthSession={state['cookie']}"
        return Reply(200, {"couchdb": "Welcome"})

    client, _, _ = make_client(handler, auth="cookie")
    client.info()
    state["expired"] = True
    client.info()
    assert log == ["POST /_session", "GET /", "GET /", "POST /_session", "GET /"]


def test_cookie_auth_keeps_the_servers_refreshed_cookie() -> None:
    seen: list[str] = []

    def handler(request: Request) -> Reply:
        if request.path == "/_session":
            return Reply(200, {"ok": True}, headers={"Set-Cookie": "AuthSession=first; Path=/"})
        seen.append(request.headers["cookie"])
        return Reply(200, {"ok": True}, headers={"Set-Cookie": "AuthSession=second; Path=/; HttpOnly"})

    client, _, _ = make_client(handler, auth="cookie")
    client.info()
    client.info()
    assert seen == ["AuthSession=first", "AuthSession=second"]


def test_cookie_auth_with_wrong_password_is_unauthorized_without_the_password() -> None:
    def handler(request: Request) -> Reply:
        return Reply(401, {"error": "unauthorized", "reason": "Name or password is incorrect."})

    client, server, _ = make_client(handler, auth="cookie")
    with pytest.raises(Unauthorized, match="Name or password is incorrect") as info:
        client.info()
    assert "s3cret" not in str(info.value)
    assert [r.path for r in server.requests] == ["/_session"]


# --- URLs --------------------------------------------------------------------------------------


def test_design_and_local_ids_keep_their_slash() -> None:
    assert doc_path("_design/certstore") == "_design/certstore"
    assert doc_path("_local/follower") == "_local/follower"
    assert doc_path("a/b") == "a%2Fb"
    assert doc_path("deploy:web1:site") == "deploy%3Aweb1%3Asite"


def test_url_parsing_splits_and_hides_credentials() -> None:
    parsed = ServerURL.parse("http://ad%40min:p%3Aw@127.0.0.1:5984/")
    assert parsed.url == "http://127.0.0.1:5984"
    assert parsed.user == "ad@min"
    assert parsed.password == "p:w"
    assert parsed.with_credentials() == "http://ad%40min:p%3Aw@127.0.0.1:5984"
    assert redact("http://admin:pw@h:1/db") == "http://admin:***@h:1/db"
    assert ServerURL.parse("https://[::1]:6984/couch/").url == "https://[::1]:6984/couch"
    for bad in ("localhost:5984", "ftp://x", "http://", "http://h:notaport"):
        with pytest.raises(CouchError):
            ServerURL.parse(bad)


def test_query_parameters_are_encoded_for_couchdb() -> None:
    client, server, _ = make_client(lambda request: Reply(200, {"rows": []}))
    client.db("certstore").view("certstore", "credentials_by_hostname", key="a.example", include_docs=True)
    assert server.requests[0].target == (
        "/certstore/_design/certstore/_view/credentials_by_hostname?key=%22a.example%22&include_docs=true"
    )
    params = server.requests[0].params
    assert params["key"] == '"a.example"'
    assert params["include_docs"] == "true"


def test_json_query_values_are_percent_encoded() -> None:
    client, server, _ = make_client(lambda request: Reply(200, {"rows": []}))
    db = client.db("certstore")
    db.all_docs(startkey="deploy:web 1:", endkey="deploy:web 1:\ufff0", include_docs=False, limit=5)
    db.view("d", "v", keys=["a/b", "c+d"], stale=None)
    first, second = (r.query for r in server.requests)
    assert first == (
        "startkey=%22deploy%3Aweb%201%3A%22&endkey=%22deploy%3Aweb%201%3A%5Cufff0%22&include_docs=false&limit=5"
    )
    assert second == "keys=%5B%22a%2Fb%22%2C%20%22c%2Bd%22%5D"
    assert json.loads(server.requests[1].params["keys"]) == ["a/b", "c+d"]


def test_a_path_prefix_goes_before_every_path() -> None:
    client, server, _ = make_client(lambda request: Reply(200, {"ok": True}), "http://proxy:8080/couch/")
    client.info()
    client.db("my db").get("_design/x", rev="1-a")
    assert [r.target for r in server.requests] == ["/couch/", "/couch/my%20db/_design/x?rev=1-a"]


def test_an_unquoted_path_is_an_error_not_an_outage() -> None:
    client, server, sleeps = make_client(lambda request: Reply(200, {}))
    with pytest.raises(CouchError, match=r"GET http://127\.0\.0\.1:5984/a b") as info:
        client.request("GET", "/a b")
    assert not isinstance(info.value, CouchUnreachable)
    assert sleeps == []
    assert server.requests == []


def test_new_connection_picks_http_or_https_and_the_port() -> None:
    plain = new_connection("http://couch.example", 3.0)
    assert type(plain) is http.client.HTTPConnection
    assert (plain.host, plain.port, plain.timeout) == ("couch.example", 80, 3.0)
    tls = new_connection("https://[::1]:6984/couch", 5.0)
    assert isinstance(tls, http.client.HTTPSConnection)
    assert (tls.host, tls.port, tls.timeout) == ("::1", 6984, 5.0)
    assert new_connection("https://couch.example", 1.0).port == 443


def test_the_default_seam_connects_to_the_url_with_the_timeout() -> None:
    client = CouchClient("https://admin:pw@couch.example:6984", timeout=7.0)
    conn = client._connect()
    assert isinstance(conn, http.client.HTTPSConnection)
    assert (conn.host, conn.port, conn.timeout) == ("couch.example", 6984, 7.0)


# --- feeds on a real socket --------------------------------------------------------------------


class FeedServer:
    """A local TCP server that answers each connection's request with a chunked feed, then stays silent."""

    def __init__(
        self,
        chunks: list[bytes],
        *,
        status: str = "200 OK",
        body: bytes | None = None,
        length: int | None = None,
        hang_up: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.chunks = chunks
        self.status = status
        self.body = body  # sent with a Content-Length (``length``, or its own) instead of the chunks
        self.length = length
        self.hang_up = hang_up  # close the connection after the chunks (a server that died)
        self.tls = tls
        self.requests: list[bytes] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://admin:s3cret@127.0.0.1:{self.port}"

    def _serve(self) -> None:
        conns: list[socket.socket] = []
        self.listener.settimeout(0.1)  # to notice close()
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            conns.append(conn)
            try:
                self._answer(self.tls.wrap_socket(conn, server_side=True) if self.tls else conn)
            except OSError:
                pass  # the client went away (or refused our certificate)
        for conn in conns:
            conn.close()

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        self.requests.append(data)
        if self.body is not None:
            head = f"HTTP/1.1 {self.status}\r\nContent-Length: {self.length or len(self.body)}\r\n\r\n"
            conn.sendall(head.encode() + self.body)
        else:
            conn.sendall(f"HTTP/1.1 {self.status}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            for chunk in self.chunks:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b"0\r\n\r\n")
        if self.hang_up:
            conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def feed_server() -> Iterator[Callable[..., FeedServer]]:
    servers: list[FeedServer] = []

    def start(chunks: list[bytes], **kw: Any) -> FeedServer:
        servers.append(FeedServer(chunks, **kw))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def read_in_thread(feed: Feed, out: list[object]) -> threading.Thread:
    def reader() -> None:
        try:
            for line in feed.lines():
                out.append(line)
        except CouchUnreachable as exc:
            out.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread


def test_feed_yields_lines_across_chunks_and_ends_with_the_stream(
    feed_server: Callable[..., FeedServer],
) -> None:
    server = feed_server([b'{"seq":1,"id":"a"}\n\n{"seq"', b':2,"id":"b"}\r\n{"last_seq":2}\n', b""])
    client = CouchClient(server.url)
    with client.feed("/db/_changes", {"feed": "continuous", "since": 0}, read_timeout=5) as feed:
        lines = list(feed.lines())
    assert lines == ['{"seq":1,"id":"a"}', "", '{"seq":2,"id":"b"}', '{"last_seq":2}']
    request = server.requests[0].decode()
    assert request.startswith("GET /db/_changes?feed=continuous&since=0 HTTP/1.1\r\n")
    assert "Accept: application/json\r\n" in request
    assert "Accept-Encoding: identity\r\n" in request
    assert "Authorization: Basic YWRtaW46czNjcmV0\r\n" in request


def test_feed_interrupt_ends_a_blocked_read_at_once(feed_server: Callable[..., FeedServer]) -> None:
    server = feed_server([b'{"seq":1,"id":"a"}\n'])  # then silence: the reader blocks
    client = CouchClient(server.url)
    out: list[object] = []
    with client.feed("/db/_changes", {"feed": "continuous"}, read_timeout=60) as feed:
        thread = read_in_thread(feed, out)
        deadline = time.monotonic() + 5
        while not out and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # let the reader block in recv
        started = time.monotonic()
        feed.interrupt()
        thread.join(5)
        assert not thread.is_alive(), "interrupt() did not end the read"
        assert time.monotonic() - started < 1
        # Reading on after the interrupt does not block either (http.client has closed the stream).
        assert list(feed.lines()) == []
        assert time.monotonic() - started < 1
    assert out[0] == '{"seq":1,"id":"a"}'
    assert isinstance(out[-1], CouchUnreachable)
    assert f"feed from http://127.0.0.1:{server.port} broke" in str(out[-1])
    assert list(feed.lines()) == []  # and once the feed is closed, there is nothing more


def test_https_goes_over_verified_tls_and_its_feed_can_be_interrupted(
    feed_server: Callable[..., FeedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server = feed_server([b'{"seq":1}\n'], tls=server_context)
    url = f"https://admin:s3cret@127.0.0.1:{server.port}"

    # The system trust store does not know the test CA: refused, and said so.
    with pytest.raises(CouchUnreachable, match="SSLCertVerificationError") as info:
        CouchClient(url, backoff=()).info()
    assert "s3cret" not in str(info.value)

    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    monkeypatch.setattr(couch, "_tls_context", lambda: trusting)
    out: list[object] = []
    with CouchClient(url).feed("/db/_changes", {"feed": "continuous"}, read_timeout=60) as feed:
        thread = read_in_thread(feed, out)
        deadline = time.monotonic() + 5
        while not out and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # let the reader block in the TLS read
        feed.interrupt()
        thread.join(5)
        assert not thread.is_alive(), "interrupt() did not end the TLS read"
    assert out[0] == '{"seq":1}'
    assert isinstance(out[-1], CouchUnreachable)
    assert "Authorization: Basic YWRtaW46czNjcmV0\r\n" in server.requests[-1].decode()


def test_feed_interrupted_before_it_connects_never_connects() -> None:
    client, server, _ = make_client(lambda request: Reply(200, raw=b""))
    feed = Feed()
    feed.interrupt()
    with (
        pytest.raises(CouchUnreachable, match="interrupted"),
        client.feed("/db/_changes", {}, read_timeout=5, feed=feed),
    ):
        pass
    assert server.connections == 0


def test_feed_interrupted_while_connecting_is_dropped_before_any_request() -> None:
    feed = Feed()

    class InterruptedWhileConnecting(FakeConnection):
        def connect(self) -> None:
            super().connect()
            feed.interrupt()  # another thread, while the connection was being made

    server = FakeServer(lambda request: Reply(200, raw=b""))
    client = CouchClient("http://127.0.0.1:5984", connect=lambda: InterruptedWhileConnecting(server))
    with (
        pytest.raises(CouchUnreachable, match="interrupted"),
        client.feed("/db/_changes", {}, read_timeout=5, feed=feed),
    ):
        pass
    assert server.connections == 1
    assert server.requests == []
    assert server.sockets[0].closed


def test_feed_sets_the_read_timeout_on_its_socket() -> None:
    client, server, _ = make_client(lambda request: Reply(200, raw=b"\n"), timeout=30)
    with client.feed("/db/_changes", {"feed": "continuous"}, read_timeout=12.5) as feed:
        assert list(feed.lines()) == [""]
    assert server.sockets[0].timeout == 12.5
    assert server.sockets[0].closed


def test_feed_read_timeout_breaks_the_feed(feed_server: Callable[..., FeedServer]) -> None:
    server = feed_server([b"\n"])
    client = CouchClient(server.url)
    with client.feed("/db/_changes", {"feed": "continuous"}, read_timeout=0.2) as feed:
        lines = feed.lines()
        assert next(lines) == ""
        started = time.monotonic()
        with pytest.raises(CouchUnreachable, match="broke: TimeoutError: timed out"):
            next(lines)
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "framing",
    [
        {"chunks": [b'{"seq":1}\n{"seq"']},  # chunked, cut off without the last chunk
        {"chunks": [], "body": b'{"seq":1}\n{"seq"', "length": 100},  # shorter than its Content-Length
    ],
)
def test_a_feed_the_server_cuts_off_is_broken_not_ended(
    feed_server: Callable[..., FeedServer], framing: dict[str, Any]
) -> None:
    server = feed_server(hang_up=True, **framing)
    client = CouchClient(server.url)
    lines: list[str] = []
    with (
        pytest.raises(CouchUnreachable, match="broke") as info,
        client.feed("/db/_changes", {"feed": "continuous"}, read_timeout=5) as feed,
    ):
        lines.extend(feed.lines())
    assert lines == ['{"seq":1}']
    assert "s3cret" not in str(info.value)


def test_feed_errors_are_typed(feed_server: Callable[..., FeedServer]) -> None:
    server = feed_server(
        [], status="404 Object Not Found", body=b'{"error":"not_found","reason":"Database does not exist."}'
    )
    client = CouchClient(server.url)
    with (
        pytest.raises(NotFound, match="Database does not exist") as info,
        client.feed("/db/_changes", {"feed": "continuous"}, read_timeout=5),
    ):
        pass
    assert "s3cret" not in str(info.value)


def test_feed_to_nowhere_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = CouchClient(f"http://127.0.0.1:{port}")
    with (
        pytest.raises(CouchUnreachable, match=f"feed from http://127.0.0.1:{port} broke: ConnectionRefused"),
        client.feed("/db/_changes", {}, read_timeout=5),
    ):
        pass


def test_stale_connection_on_a_real_socket_is_retried() -> None:
    """A server that closes each connection after replying, without saying so (like an idle timeout)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[int] = []

    def serve() -> None:
        for n in range(2):
            conn, _ = listener.accept()
            accepted.append(n)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                body = b'{"n":%d}' % n
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    sleeps: list[float] = []
    client = CouchClient(f"http://127.0.0.1:{port}", sleep=sleeps.append, timeout=5)
    assert client.info() == {"n": 0}
    time.sleep(0.05)  # the server's close reaches the pooled socket
    assert client.info() == {"n": 1}
    assert sleeps == []
    thread.join(5)
    listener.close()
    client.close()
