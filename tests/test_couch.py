"""Unit tests for the CouchDB client, through httpx's transport seam (no server)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from store.couch import CouchClient, ServerURL, doc_path, redact
from store.errors import Conflict, CouchError, CouchUnreachable, Forbidden, NotFound, Unauthorized

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(
    handler: Handler, url: str = "http://admin:s3cret@127.0.0.1:5984", **kw: object
) -> CouchClient:
    sleeps: list[float] = []
    client = CouchClient(url, transport=httpx.MockTransport(handler), sleep=sleeps.append, **kw)  # type: ignore[arg-type]
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


def test_every_request_sends_json_headers_and_basic_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"ok": True, "id": "credential:web", "rev": "1-a"})

    client = make_client(handler)
    doc = {"_id": "credential:web", "type": "tls_credential"}
    assert client.db("certstore").put(doc) == "1-a"
    assert doc["_rev"] == "1-a"
    req = seen[0]
    assert req.headers["accept"] == "application/json"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["authorization"].startswith("Basic ")
    assert req.url.raw_path == b"/certstore/credential%3Aweb"
    assert json.loads(req.content) == {"_id": "credential:web", "type": "tls_credential"}


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, Unauthorized), (403, Forbidden), (404, NotFound), (409, Conflict), (400, CouchError)],
)
def test_errors_are_typed_and_carry_the_doc_id(status: int, error: type[CouchError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": "x", "reason": "server says no"})

    client = make_client(handler)
    with pytest.raises(error) as info:
        client.db("certstore").get("server:web1")
    assert info.value.doc_id == "server:web1"
    assert info.value.status == status
    assert "server says no" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_5xx_and_connection_errors_are_retried_by_the_backoff_table() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused")
        if calls["n"] == 2:
            return httpx.Response(503, json={"error": "unavailable"})
        return httpx.Response(200, json={"_id": "settings", "_rev": "1-x"})

    client = make_client(handler, backoff=(0.1, 0.2, 0.3))
    assert client.db("certstore").get("settings")["_id"] == "settings"
    assert client.sleeps == [0.1, 0.2]  # type: ignore[attr-defined]


def test_unreachable_after_the_last_retry_says_where() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    client = make_client(handler, backoff=(0.0, 0.0))
    with pytest.raises(CouchUnreachable) as info:
        client.info()
    assert "http://127.0.0.1:5984" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_cookie_auth_logs_in_once_and_again_when_the_session_expires() -> None:
    log: list[str] = []
    state = {"expired": False}

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(f"{request.method} {request.url.path}")
        if request.url.path == "/_session":
            body = json.loads(request.content)
            assert body == {"name": "admin", "password": "s3cret"}
            return httpx.Response(200, json={"ok": True}, headers={"set-cookie": "AuthSession=abc; Path=/"})
        assert "authorization" not in request.headers
        if state["expired"]:
            state["expired"] = False
            return httpx.Response(401, json={"error": "unauthorized"})
        return httpx.Response(200, json={"couchdb": "Welcome"})

    client = make_client(handler, auth="cookie")
    client.info()
    state["expired"] = True
    client.info()
    assert log == ["POST /_session", "GET /", "GET /", "POST /_session", "GET /"]


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
    for bad in ("localhost:5984", "ftp://x", "http://", "http://h:notaport"):
        with pytest.raises(CouchError):
            ServerURL.parse(bad)


def test_query_parameters_are_encoded_for_couchdb() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"rows": []})

    client = make_client(handler)
    client.db("certstore").view("certstore", "credentials_by_hostname", key="a.example", include_docs=True)
    params = seen[0].url.params
    assert params["key"] == '"a.example"'
    assert params["include_docs"] == "true"
