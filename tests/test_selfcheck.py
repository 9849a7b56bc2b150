"""Tests for agent.selfcheck: confirm_served against real responders on free loopback ports."""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from agent.errors import ChallengeNotServed, InvalidChallenge
from agent.responder import ChallengeMap, Responder
from agent.selfcheck import confirm_served


def make_token() -> str:
    return secrets.token_urlsafe(16)


def key_auth(token: str, seed: str = "account") -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return f"{token}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


class Server:
    """A responder with its own map, as one server of the fleet runs it."""

    def __init__(self) -> None:
        self.challenges = ChallengeMap()
        self.responder = Responder(self.challenges, "127.0.0.1", 0)
        self.responder.start()

    @property
    def url(self) -> str:
        return self.responder.url


@pytest.fixture
def servers() -> Iterator[Callable[[], Server]]:
    started: list[Server] = []

    def start() -> Server:
        server = Server()
        started.append(server)
        return server

    yield start
    for server in started:
        server.responder.stop()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_returns_once_a_late_server_catches_up(servers: Callable[[], Server]) -> None:
    web1, web2 = servers(), servers()
    token = make_token()
    web1.challenges.put(token, key_auth(token))
    # web2 gets the challenge later, as replication would deliver it.
    late = threading.Timer(0.3, web2.challenges.put, (token, key_auth(token)))
    late.start()
    try:
        started = time.monotonic()
        took = confirm_served({token: key_auth(token)}, {"web1": web1.url, "web2": web2.url}, 5.0)
        elapsed = time.monotonic() - started
    finally:
        late.cancel()
    assert set(took) == {"web1", "web2"}
    assert took["web1"] < 0.25
    assert 0.29 <= took["web2"] <= elapsed
    assert elapsed < 1.0  # it returned as soon as web2 answered, not at the deadline


def test_several_tokens_on_several_servers(servers: Callable[[], Server]) -> None:
    fleet = {f"web{i}": servers() for i in range(4)}
    tokens = {token: key_auth(token) for token in (make_token() for _ in range(3))}
    for server in fleet.values():
        for token, authorization in tokens.items():
            server.challenges.put(token, authorization)
    took = confirm_served(tokens, {name: server.url for name, server in fleet.items()}, 5.0)
    assert set(took) == set(fleet)


def test_a_server_that_never_gets_the_token_is_named(servers: Callable[[], Server]) -> None:
    web1, web2, web3 = servers(), servers(), servers()
    token = make_token()
    web1.challenges.put(token, key_auth(token))
    web3.challenges.put(token, key_auth(token))
    started = time.monotonic()
    with pytest.raises(ChallengeNotServed) as caught:
        confirm_served({token: key_auth(token)}, {"web1": web1.url, "web2": web2.url, "web3": web3.url}, 0.5)
    elapsed = time.monotonic() - started
    assert caught.value.lagging == {"web2": f"404 for token {token[:8]}…"}
    assert f"web2: 404 for token {token[:8]}…" in str(caught.value)
    assert "web1" not in str(caught.value) and "web3" not in str(caught.value)
    assert 0.5 <= elapsed < 1.5


def test_only_the_missing_token_is_named(servers: Callable[[], Server]) -> None:
    web1 = servers()
    have, missing = make_token(), make_token()
    web1.challenges.put(have, key_auth(have))
    with pytest.raises(ChallengeNotServed) as caught:
        confirm_served({have: key_auth(have), missing: key_auth(missing)}, {"web1": web1.url}, 0.3)
    assert caught.value.lagging == {"web1": f"404 for token {missing[:8]}…"}


def test_a_wrong_key_authorization_is_named(servers: Callable[[], Server]) -> None:
    web1, web2 = servers(), servers()
    token = make_token()
    web1.challenges.put(token, key_auth(token))
    web2.challenges.put(token, key_auth(token, seed="another account"))
    with pytest.raises(ChallengeNotServed) as caught:
        confirm_served({token: key_auth(token)}, {"web1": web1.url, "web2": web2.url}, 0.3)
    assert list(caught.value.lagging) == ["web2"]
    assert "wrong key authorization" in caught.value.lagging["web2"]


def test_a_closed_port_is_named_as_connection_refused(servers: Callable[[], Server]) -> None:
    web1 = servers()
    token = make_token()
    web1.challenges.put(token, key_auth(token))
    with pytest.raises(ChallengeNotServed) as caught:
        confirm_served({token: key_auth(token)}, {"web1": web1.url, "web9": closed_port_url()}, 0.3)
    assert caught.value.lagging == {"web9": "connection refused"}
    assert "web9: connection refused" in str(caught.value)


def test_a_server_that_never_answers_times_out_within_the_deadline() -> None:
    # A listening socket nobody accepts from: connections complete in the kernel, requests hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        token = make_token()
        started = time.monotonic()
        with pytest.raises(ChallengeNotServed) as caught:
            confirm_served({token: key_auth(token)}, {"web1": url}, 0.5, request_timeout_s=0.2)
        elapsed = time.monotonic() - started
    assert "no answer within" in caught.value.lagging["web1"]
    assert elapsed < 1.0


@pytest.mark.parametrize(
    "bad_url",
    [
        "ftp://127.0.0.1:21",
        "127.0.0.1:8402",
        "http://",
        "http://[::1",
        "http://host:99999999",
        "http://127.0.0.1:99999",
        "",
        "http://a b",
    ],
)
def test_a_bad_responder_url_is_that_servers_reason(servers: Callable[[], Server], bad_url: str) -> None:
    web1 = servers()
    token = make_token()
    web1.challenges.put(token, key_auth(token))
    started = time.monotonic()
    with pytest.raises(ChallengeNotServed) as caught:
        confirm_served({token: key_auth(token)}, {"web1": web1.url, "bad": bad_url}, 5.0)
    assert list(caught.value.lagging) == ["bad"]
    assert "responder URL" in caught.value.lagging["bad"]
    # The good server was still checked, and the call did not wait for the deadline.
    assert time.monotonic() - started < 1.0


def test_a_base_url_with_a_trailing_slash(servers: Callable[[], Server]) -> None:
    web1 = servers()
    token = make_token()
    web1.challenges.put(token, key_auth(token))
    assert set(confirm_served({token: key_auth(token)}, {"web1": web1.url + "/"}, 2.0)) == {"web1"}


def test_malformed_challenges_are_refused_at_once() -> None:
    token = make_token()
    with pytest.raises(InvalidChallenge):
        confirm_served({token: "something else"}, {"web1": "http://127.0.0.1:1"}, 5.0)
    with pytest.raises(InvalidChallenge):
        confirm_served({"short": "short.x"}, {"web1": "http://127.0.0.1:1"}, 5.0)


def test_no_servers_or_no_tokens(servers: Callable[[], Server]) -> None:
    token = make_token()
    assert confirm_served({token: key_auth(token)}, {}, 1.0) == {}
    assert confirm_served({}, {"web1": servers().url}, 1.0) == {"web1": 0.0}


def test_a_given_http_client_is_used_and_left_open(servers: Callable[[], Server]) -> None:
    web1 = servers()
    token = make_token()
    web1.challenges.put(token, key_auth(token))
    seen: list[str] = []
    with httpx.Client(event_hooks={"request": [lambda request: seen.append(str(request.url))]}) as client:
        confirm_served({token: key_auth(token)}, {"web1": web1.url}, 2.0, http_client=client)
        assert not client.is_closed
    assert seen == [f"{web1.url}/.well-known/acme-challenge/{token}"]


def test_proxy_settings_are_ignored(servers: Callable[[], Server], monkeypatch: pytest.MonkeyPatch) -> None:
    # Responders are reached directly; a proxy from the environment would answer for them.
    monkeypatch.setenv("HTTP_PROXY", closed_port_url())
    monkeypatch.setenv("ALL_PROXY", closed_port_url())
    web1 = servers()
    token = make_token()
    web1.challenges.put(token, key_auth(token))
    assert set(confirm_served({token: key_auth(token)}, {"web1": web1.url}, 2.0)) == {"web1"}
