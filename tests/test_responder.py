"""Tests for agent.responder: the challenge map, feeding it from documents, and the real HTTP server.

Every server test runs our responder on a free loopback port and talks to it over real sockets; raw
sockets where the request must be sent byte for byte (NUL, non-ASCII, junk, slow clients).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from agent.errors import InvalidChallenge
from agent.responder import (
    CHALLENGE_PATH_PREFIX,
    ChallengeMap,
    Responder,
    apply_challenge_doc,
    token_from_doc_id,
    token_from_path,
)
from store.errors import ValidationError


def make_token(length: int = 22) -> str:
    return secrets.token_urlsafe(length)[:length]


def thumbprint(seed: str = "account") -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()).decode().rstrip("=")


def key_auth(token: str, seed: str = "account") -> str:
    return f"{token}.{thumbprint(seed)}"


def utc(seconds_from_now: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds_from_now)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def raw_exchange(port: int, data: bytes, *, timeout: float = 3.0) -> bytes:
    """Send ``data`` on a fresh connection, half-close, and read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def raw_get(port: int, target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """Status code and body of one request with ``target`` sent exactly as given."""
    reply = raw_exchange(port, method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


@pytest.fixture
def challenges() -> ChallengeMap:
    return ChallengeMap()


@pytest.fixture
def start_responder(challenges: ChallengeMap) -> Iterator[Callable[..., Responder]]:
    started: list[Responder] = []

    def start(**options: Any) -> Responder:
        responder = Responder(challenges, "127.0.0.1", 0, **options)
        responder.start()
        started.append(responder)
        return responder

    yield start
    for responder in started:
        responder.stop()


@pytest.fixture
def responder(start_responder: Callable[..., Responder]) -> Responder:
    return start_responder()


@pytest.fixture
def served(challenges: ChallengeMap) -> tuple[str, str]:
    token = make_token()
    challenges.put(token, key_auth(token))
    return token, key_auth(token)


# --- the map -----------------------------------------------------------------------------------


def test_map_put_get_remove_tokens(challenges: ChallengeMap) -> None:
    first, second = make_token(), make_token(43)
    challenges.put(first, key_auth(first))
    challenges.put(second, key_auth(second), utc(60))
    assert challenges.get(first) == key_auth(first)
    assert challenges.tokens() == sorted([first, second])
    assert challenges.remove(first) is True
    assert challenges.remove(first) is False
    assert challenges.get(first) is None
    assert challenges.tokens() == [second]


def test_map_replaces_an_entry(challenges: ChallengeMap) -> None:
    token = make_token()
    challenges.put(token, key_auth(token, "old"))
    challenges.put(token, key_auth(token, "new"))
    assert challenges.get(token) == key_auth(token, "new")


def test_expired_entries_are_not_served_and_are_dropped() -> None:
    clock = FakeClock()
    challenges = ChallengeMap(clock=clock)
    token, forever = make_token(), make_token()
    challenges.put(token, key_auth(token), clock.now + timedelta(seconds=10))
    challenges.put(forever, key_auth(forever), None)
    assert challenges.get(token) == key_auth(token)
    clock.now += timedelta(seconds=10)  # expiry is exclusive: at the instant itself it is gone
    assert challenges.get(token) is None
    assert challenges.tokens() == [forever]


def test_expiry_in_another_zone_is_compared_correctly() -> None:
    clock = FakeClock()
    challenges = ChallengeMap(clock=clock)
    token = make_token()
    plus_two = timezone(timedelta(hours=2))
    challenges.put(token, key_auth(token), (clock.now + timedelta(seconds=5)).astimezone(plus_two))
    assert challenges.get(token) is not None
    clock.now += timedelta(seconds=6)
    assert challenges.get(token) is None


@pytest.mark.parametrize(
    ("token", "authorization"),
    [
        ("A" * 15, "A" * 15 + "." + thumbprint()),  # too short for 128 bits of entropy
        ("A" * 129, "A" * 129 + "." + thumbprint()),  # overlong
        ("A" * 20 + "=", "A" * 20 + "=." + thumbprint()),  # padding is not base64url token syntax
        ("A" * 20 + "/+", "A" * 20 + "/+." + thumbprint()),  # standard base64, not base64url
        ("../" + "A" * 20, "../" + "A" * 20 + "." + thumbprint()),
        ("A" * 20 + "\0", "A" * 20 + "\0." + thumbprint()),
        ("Ä" * 20, "Ä" * 20 + "." + thumbprint()),
        ("\uff11" * 20, "\uff11" * 20 + "." + thumbprint()),  # fullwidth "1" is not [0-9]
        ("A" * 22, "B" * 22 + "." + thumbprint()),  # another token's authorization
        ("A" * 22, "A" * 22 + thumbprint()),  # no dot
        ("A" * 22, "A" * 22 + "." + thumbprint()[:-1]),  # thumbprint too short
        ("A" * 22, "A" * 22 + "." + thumbprint() + "\r\nX-Evil: 1"),  # header injection attempt
        ("A" * 22, "A" * 22 + ".." + thumbprint()[1:]),
        ("A" * 22, ""),
    ],
)
def test_map_refuses_malformed_challenges(challenges: ChallengeMap, token: str, authorization: str) -> None:
    with pytest.raises(InvalidChallenge) as caught:
        challenges.put(token, authorization)
    assert isinstance(caught.value, ValidationError)
    assert caught.value.field in ("token", "key_authorization")
    assert challenges.tokens() == []


def test_map_refuses_a_naive_expiry(challenges: ChallengeMap) -> None:
    token = make_token()
    with pytest.raises(InvalidChallenge):
        challenges.put(token, key_auth(token), datetime.now())  # naive: the point of the test
    assert challenges.get(token) is None


# --- documents ---------------------------------------------------------------------------------


def challenge_doc(doc_token: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": f"challenge:{doc_token}",
        "_rev": "1-abc",
        "type": "acme_challenge",
        "token": doc_token,
        "key_authorization": key_auth(doc_token),
        "hostnames": ["www.example.com"],
        "expires": (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    doc.update(changes)
    return {key: value for key, value in doc.items() if value is not None}


def test_a_valid_document_is_served_and_its_deletion_stops_it(challenges: ChallengeMap) -> None:
    token = make_token()
    assert apply_challenge_doc(challenges, f"challenge:{token}", challenge_doc(token), False) is True
    assert challenges.get(token) == key_auth(token)
    # On deletion the feed gives only the id.
    assert apply_challenge_doc(challenges, f"challenge:{token}", None, True) is True
    assert challenges.get(token) is None


@pytest.mark.parametrize(
    "deletion",
    [
        lambda token: (None, False),
        lambda token: ({"_id": f"challenge:{token}", "_rev": "2-x", "_deleted": True}, False),
        lambda token: (challenge_doc(token), True),
    ],
    ids=["no-body", "tombstone", "deleted-flag"],
)
def test_every_form_of_deletion_removes(
    challenges: ChallengeMap, deletion: Callable[[str], tuple[dict[str, Any] | None, bool]]
) -> None:
    token = make_token()
    challenges.put(token, key_auth(token))
    doc, deleted = deletion(token)
    assert apply_challenge_doc(challenges, f"challenge:{token}", doc, deleted) is True
    assert challenges.get(token) is None


def test_the_token_field_is_optional_because_the_id_carries_it(challenges: ChallengeMap) -> None:
    token = make_token()
    assert apply_challenge_doc(challenges, f"challenge:{token}", challenge_doc(token, token=None), False)
    assert challenges.get(token) == key_auth(token)


def test_an_expired_document_is_not_served(challenges: ChallengeMap) -> None:
    token = make_token()
    doc = challenge_doc(token, expires="2020-01-01T00:00:00Z")
    apply_challenge_doc(challenges, f"challenge:{token}", doc, False)
    assert challenges.get(token) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"token": "B" * 22},  # token field disagrees with the id
        {"key_authorization": key_auth("B" * 22)},  # another token's authorization
        {"key_authorization": "A" * 22 + ".short"},
        {"key_authorization": None},
        {"type": "tls_credential"},
        {"expires": "tomorrow"},
        {"expires": "2030-01-01T00:00:00+02:00"},  # stored times are UTC with Z
        {"_id": "challenge:" + "C" * 22},  # body of another document
        {"hostnames": []},
    ],
    ids=["token", "foreign-ka", "short-ka", "no-ka", "type", "expires", "expires-zone", "_id", "hostnames"],
)
def test_a_malformed_document_is_never_served_and_drops_the_old_version(
    challenges: ChallengeMap, caplog: pytest.LogCaptureFixture, changes: dict[str, Any]
) -> None:
    token = "A" * 22
    challenges.put(token, key_auth(token))  # an earlier, valid version
    with caplog.at_level(logging.WARNING, logger="agent.responder"):
        used = apply_challenge_doc(challenges, f"challenge:{token}", challenge_doc(token, **changes), False)
    assert used is False
    assert challenges.get(token) is None
    assert any("not serving challenge document" in record.getMessage() for record in caplog.records)


def test_other_documents_are_skipped_silently(
    challenges: ChallengeMap, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="agent.responder"):
        for doc_id in ("settings", "credential:web", "server:web1", "deploy:web1:web"):
            assert apply_challenge_doc(challenges, doc_id, {"_id": doc_id, "type": "x"}, False) is False
            assert apply_challenge_doc(challenges, doc_id, None, True) is False
    assert caplog.records == []
    assert challenges.tokens() == []


@pytest.mark.parametrize("doc_id", ["challenge:../x", "challenge:short", "challenge:" + "A" * 22 + ":x"])
def test_a_malformed_challenge_id_is_warned_about(
    challenges: ChallengeMap, caplog: pytest.LogCaptureFixture, doc_id: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.responder"):
        assert apply_challenge_doc(challenges, doc_id, None, True) is False
    assert len(caplog.records) == 1
    assert token_from_doc_id(doc_id) is None


def test_token_from_doc_id() -> None:
    token = make_token()
    assert token_from_doc_id(f"challenge:{token}") == token
    assert token_from_doc_id(f"credential:{token.lower()}") is None


# --- request targets ---------------------------------------------------------------------------


def test_token_from_path_matches_exactly() -> None:
    token = make_token()
    assert token_from_path(CHALLENGE_PATH_PREFIX + token) == token
    for path in (
        CHALLENGE_PATH_PREFIX + token + "?x=1",
        CHALLENGE_PATH_PREFIX + token + "/",
        CHALLENGE_PATH_PREFIX + token + "#f",
        CHALLENGE_PATH_PREFIX + "a/" + token,
        CHALLENGE_PATH_PREFIX.upper() + token,
        "/x" + CHALLENGE_PATH_PREFIX + token,
        "http://example.com" + CHALLENGE_PATH_PREFIX + token,
    ):
        assert token_from_path(path) is None, path


# --- the server --------------------------------------------------------------------------------


def test_serves_the_key_authorization(responder: Responder, served: tuple[str, str]) -> None:
    token, authorization = served
    reply = httpx.get(responder.url + CHALLENGE_PATH_PREFIX + token)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain"
    assert reply.content == authorization.encode()
    assert reply.headers["server"] == "certstore-responder"  # no Python version for scanners


def test_head_gives_the_headers_without_a_body(responder: Responder, served: tuple[str, str]) -> None:
    token, authorization = served
    reply = httpx.head(responder.url + CHALLENGE_PATH_PREFIX + token)
    assert reply.status_code == 200
    assert reply.headers["content-length"] == str(len(authorization))
    assert reply.content == b""


def test_query_strings_are_refused(responder: Responder, served: tuple[str, str]) -> None:
    token, _ = served
    assert raw_get(responder.port, f"{CHALLENGE_PATH_PREFIX}{token}?x=1".encode())[0] == 404
    assert raw_get(responder.port, f"{CHALLENGE_PATH_PREFIX}{token}?".encode())[0] == 404


def test_a_token_served_then_removed(
    responder: Responder, challenges: ChallengeMap, served: tuple[str, str]
) -> None:
    token, _ = served
    assert raw_get(responder.port, (CHALLENGE_PATH_PREFIX + token).encode())[0] == 200
    challenges.remove(token)
    assert raw_get(responder.port, (CHALLENGE_PATH_PREFIX + token).encode())[0] == 404


def test_an_expired_token_is_404(responder: Responder, challenges: ChallengeMap) -> None:
    token = make_token()
    challenges.put(token, key_auth(token), utc(-1))
    assert raw_get(responder.port, (CHALLENGE_PATH_PREFIX + token).encode())[0] == 404


def test_not_found_targets(responder: Responder, challenges: ChallengeMap) -> None:
    token = "A" * 128  # the longest token: one more character must not reach it
    challenges.put(token, key_auth(token))
    short = "B" * 16
    challenges.put(short, key_auth(short))
    prefix = CHALLENGE_PATH_PREFIX.encode()
    targets = [
        prefix + make_token().encode(),  # unknown
        prefix + b"A" * 129,  # overlong
        prefix + b"B" * 15,  # too short
        prefix + b"../x",
        prefix + b"..%2f" + short.encode(),
        b"/.well-known/acme-challenge/../acme-challenge/" + short.encode(),
        b"/.well-known/%61cme-challenge/" + short.encode(),  # percent-encoded prefix
        prefix + b"%2e%2e/" + short.encode(),
        prefix + b"%42" * 16,  # "B" * 16 percent-encoded is not decoded
        prefix + short.encode() + b"%00",
        prefix + short.encode() + b"\x00",
        prefix + short.encode() + b"/",
        prefix + short.encode() + b";x",
        prefix + short.encode() + b"#frag",
        prefix + "Bé".encode() + short[2:].encode(),
        prefix + "\uff22".encode() + short[1:].encode(),  # fullwidth "B"
        prefix.upper() + short.encode(),
        prefix,
        b"/",
        b"*",
        b"/index.html",
        b"http://example.com" + prefix + short.encode(),  # absolute form is not matched
    ]
    for target in targets:
        for method in (b"GET", b"HEAD"):
            status, body = raw_get(responder.port, target, method)
            assert status == 404, target
            assert thumbprint().encode() not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "TRACE"])
def test_other_methods_are_405(responder: Responder, served: tuple[str, str], method: str) -> None:
    token, _ = served
    reply = httpx.request(method, responder.url + CHALLENGE_PATH_PREFIX + token, content=b"body")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "GET, HEAD"
    assert reply.headers["connection"] == "close"  # the unread body must not be parsed as a request


def test_a_garbage_method_is_400(responder: Responder, served: tuple[str, str]) -> None:
    token, _ = served
    assert raw_get(responder.port, (CHALLENGE_PATH_PREFIX + token).encode(), b"G(T")[0] == 400


def test_keep_alive_serves_several_requests_on_one_connection(
    responder: Responder, served: tuple[str, str]
) -> None:
    token, authorization = served
    request = f"GET {CHALLENGE_PATH_PREFIX}{token} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    reply = raw_exchange(responder.port, request * 3)
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert reply.count(authorization.encode()) == 3


def test_a_get_with_a_body_closes_the_connection(responder: Responder, served: tuple[str, str]) -> None:
    token, _ = served
    smuggled = f"GET {CHALLENGE_PATH_PREFIX}{token} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    request = f"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled
    reply = raw_exchange(responder.port, request)
    assert reply.count(b"HTTP/1.1") == 1  # the body was not taken for a second request
    assert b"Connection: close" in reply


def test_requests_are_not_logged_at_info(
    responder: Responder, served: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    token, _ = served
    with caplog.at_level(logging.INFO):
        raw_get(responder.port, (CHALLENGE_PATH_PREFIX + token).encode())
        raw_get(responder.port, b"/nothing")
        raw_exchange(responder.port, b"\x16\x03\x01 junk\r\n\r\n")
    assert [r for r in caplog.records if r.name.startswith("agent.")] == []


# --- robustness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\r\n\r\n",
        b"\x00\xff" * 500,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS ClientHello
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        b"GET " + b"/" * 70_000 + b" HTTP/1.1\r\n\r\n",  # request line over the 64 KiB limit
        b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",  # header line over the limit
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",  # too many headers
        "GET /ä HTTP/1.1\r\n\r\n".encode(),
        b"GET /.well-known/acme-challenge/" + b"A" * 22,  # unterminated request line
    ],
)
def test_junk_never_kills_the_server(responder: Responder, served: tuple[str, str], junk: bytes) -> None:
    token, authorization = served
    raw_exchange(responder.port, junk)
    assert httpx.get(responder.url + CHALLENGE_PATH_PREFIX + token).content == authorization.encode()


def test_oversized_requests_get_their_status(responder: Responder) -> None:
    assert raw_exchange(responder.port, b"GET " + b"/" * 70_000 + b" HTTP/1.1\r\n\r\n").startswith(
        b"HTTP/1.1 414"
    )
    many_headers = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"
    assert raw_exchange(responder.port, many_headers).startswith(b"HTTP/1.1 431")


def test_a_client_that_hangs_up_mid_request_is_harmless(
    responder: Responder, served: tuple[str, str]
) -> None:
    token, authorization = served
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", responder.port)) as sock:
            sock.sendall(f"GET {CHALLENGE_PATH_PREFIX}{token} HTTP/1.1\r\nHo".encode())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # SO_LINGER 0 makes close() send RST: the server sees a reset, not a clean EOF.
    assert httpx.get(responder.url + CHALLENGE_PATH_PREFIX + token).content == authorization.encode()


def test_a_silent_client_is_dropped_after_the_read_timeout(
    start_responder: Callable[..., Responder], served: tuple[str, str]
) -> None:
    responder = start_responder(read_timeout_s=0.3)
    token, authorization = served
    with socket.create_connection(("127.0.0.1", responder.port)) as sock:
        sock.sendall(b"GET /.well-kn")
        started = time.monotonic()
        # Meanwhile the server answers others.
        assert httpx.get(responder.url + CHALLENGE_PATH_PREFIX + token).content == authorization.encode()
        assert closed_by_server(sock, within=3.0)
        assert time.monotonic() - started < 2.0


def test_a_trickling_client_is_dropped_at_the_connection_age_limit(
    start_responder: Callable[..., Responder],
) -> None:
    # Each byte arrives well within the read timeout, so only the age limit can end this client.
    responder = start_responder(read_timeout_s=0.5, max_connection_s=0.8)
    with socket.create_connection(("127.0.0.1", responder.port)) as sock:
        started = time.monotonic()
        sock.settimeout(0.1)
        closed = False
        for byte in b"GET /" + b"x" * 100:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue  # still open: nothing to read yet
            except OSError:
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed
    assert 0.7 < elapsed < 2.5


def test_an_aging_keep_alive_connection_is_asked_to_reconnect(
    start_responder: Callable[..., Responder], served: tuple[str, str]
) -> None:
    responder = start_responder(max_connection_s=1.0)
    token, _ = served
    request = f"GET {CHALLENGE_PATH_PREFIX}{token} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", responder.port), timeout=3) as sock:
        sock.sendall(request)
        assert b"Connection: close" not in sock.recv(65536)
        time.sleep(0.6)  # past half the age limit: the time passing is what is tested
        sock.sendall(request)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply


def test_connections_over_the_limit_are_closed_on_accept(
    start_responder: Callable[..., Responder], served: tuple[str, str]
) -> None:
    responder = start_responder(max_connections=2)
    token, authorization = served
    idle = [socket.create_connection(("127.0.0.1", responder.port)) for _ in range(2)]
    try:
        # Give the accept loop a moment to register both, then the third is refused service.
        deadline = time.monotonic() + 3
        while True:
            with socket.create_connection(("127.0.0.1", responder.port)) as third:
                if closed_by_server(third, within=0.2):
                    break
            assert time.monotonic() < deadline
    finally:
        for sock in idle:
            sock.close()
    # Once the idle ones are gone, service resumes.
    deadline = time.monotonic() + 3
    while True:
        try:
            reply = httpx.get(responder.url + CHALLENGE_PATH_PREFIX + token)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
    assert reply.content == authorization.encode()


def test_stop_is_prompt_even_with_open_connections(challenges: ChallengeMap, served: tuple[str, str]) -> None:
    responder = Responder(challenges, "127.0.0.1", 0, read_timeout_s=30)
    responder.start()
    port = responder.port
    idle = socket.create_connection(("127.0.0.1", port))
    partial = socket.create_connection(("127.0.0.1", port))
    partial.sendall(b"GET /.well-known/acme-")
    keep_alive = httpx.Client()
    keep_alive.get(responder.url + CHALLENGE_PATH_PREFIX + served[0])  # leaves a kept-alive connection
    try:
        started = time.monotonic()
        responder.stop()
        assert time.monotonic() - started < 0.5
        assert closed_by_server(idle, within=1.0)
        assert closed_by_server(partial, within=1.0)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        responder.stop()  # a second stop is harmless
    finally:
        idle.close()
        partial.close()
        keep_alive.close()


def test_start_twice_is_refused_and_port_needs_a_start(challenges: ChallengeMap) -> None:
    responder = Responder(challenges)
    with pytest.raises(RuntimeError):
        _ = responder.port
    with responder:
        with pytest.raises(RuntimeError):
            responder.start()
        assert responder.url == f"http://127.0.0.1:{responder.port}"


def test_ipv6_loopback(challenges: ChallengeMap, served: tuple[str, str]) -> None:
    try:
        responder = Responder(challenges, "::1", 0)
        responder.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert responder.url == f"http://[::1]:{responder.port}"
        token, authorization = served
        assert httpx.get(responder.url + CHALLENGE_PATH_PREFIX + token).content == authorization.encode()
    finally:
        responder.stop()


def test_many_concurrent_clients_while_the_map_changes(
    responder: Responder, challenges: ChallengeMap, served: tuple[str, str]
) -> None:
    token, authorization = served
    failures: list[str] = []
    stop_writing = threading.Event()

    def churn() -> None:
        # Writers run while readers read: other tokens come and go, the served one must stay right.
        # The short wait keeps this loop from starving the server threads of the GIL.
        while not stop_writing.wait(0.0005):
            other = make_token()
            challenges.put(other, key_auth(other))
            challenges.remove(other)

    def client() -> None:
        with httpx.Client() as http:
            for _ in range(40):
                reply = http.get(responder.url + CHALLENGE_PATH_PREFIX + token)
                if reply.status_code != 200 or reply.content != authorization.encode():
                    failures.append(f"{reply.status_code} {reply.content[:80]!r}")

    writer = threading.Thread(target=churn)
    writer.start()
    readers = [threading.Thread(target=client) for _ in range(16)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(timeout=30)
    stop_writing.set()
    writer.join()
    assert failures == []
