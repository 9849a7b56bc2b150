"""The certmgr's self-check: does every server's responder serve every HTTP-01 key authorization yet?

The certmgr publishes ``challenge:<token>`` documents, replication carries them to every server, and
each agent's responder (agent/responder.py) starts answering. Telling the CA to validate before the
slowest server answers would fail the order whenever the CA's request lands there, so the certmgr first
calls :func:`confirm_served` with every server that has reported in.

Every (server, token) pair is polled on its own schedule by a small thread pool: a server that hangs
holds one worker per token for at most one request timeout, never the others' polls. A pair that
answers wrongly is polled again after ``poll_interval_s``; the whole check ends at the deadline.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from agent.errors import ChallengeNotServed
from agent.responder import CHALLENGE_PATH_PREFIX, check_challenge, short_token
from store.names import url_problem

#: Pause between two polls of the same (server, token) after a wrong answer: replication is fast, so
#: short, but not so short that a lagging server is hammered.
DEFAULT_POLL_INTERVAL_S = 0.05
#: Per-request timeout: a responder is a small local-network server, so one that takes longer is lagging.
DEFAULT_REQUEST_TIMEOUT_S = 1.0
#: Upper bound on concurrent requests (and threads), whatever the fleet size.
MAX_WORKERS = 32


@dataclass
class _Probe:
    """One (server, token) pair being polled."""

    server: str
    token: str
    url: str
    expected: bytes
    due: float = 0.0
    reason: str = "no answer before the deadline"
    served_at: float | None = None  # monotonic time of the first right answer


def responder_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a responder base URL, or ``None``.

    The ``server`` document's rule for ``responder_url``, plus a port in range (its pattern allows any
    five digits).
    """
    problem = url_problem(url, schemes=("http", "https"))
    if problem is None:
        try:
            port = urlsplit(url).port
        except ValueError:
            port = 0
        if port == 0:
            problem = "has a port outside 1-65535"
    return problem


def confirm_served(
    tokens: Mapping[str, str],
    responders: Mapping[str, str],
    deadline_s: float,
    *,
    http_client: httpx.Client | None = None,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> dict[str, float]:
    """Wait until every responder serves exactly the key authorization of every token.

    ``tokens`` maps token → key authorization, ``responders`` server name → responder base URL
    (``http://web1.example.net:80``). Returns, per server, the seconds from the call until that server
    served all tokens. Raises :class:`ChallengeNotServed` once ``deadline_s`` has passed with servers
    still lagging (a server with an unusable URL lags from the start); its ``lagging`` maps each to
    why, e.g. ``"404 for token abcdefgh…"`` or ``"connection refused"``. Raises
    :class:`~agent.errors.InvalidChallenge` at once for a malformed token or key authorization, which no
    responder would ever serve.

    ``http_client`` is used when given (it must not follow redirects: a redirect is not serving);
    otherwise a client is made that ignores proxy settings from the environment, since responders are
    reached directly.
    """
    for token, key_authorization in tokens.items():
        check_challenge(token, key_authorization)
    started = time.monotonic()
    unusable: dict[str, str] = {}
    probes: list[_Probe] = []
    for server, base_url in responders.items():
        problem = responder_url_problem(base_url)
        if problem is not None:
            unusable[server] = f"responder URL {base_url[:200]!r} {problem}"
            continue
        prefix = base_url.rstrip("/") + CHALLENGE_PATH_PREFIX
        probes += [
            _Probe(server, token, prefix + token, key_authorization.encode("ascii"))
            for token, key_authorization in tokens.items()
        ]

    client = http_client or httpx.Client(
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=MAX_WORKERS, max_keepalive_connections=MAX_WORKERS),
    )
    try:
        _poll(client, probes, started + deadline_s, poll_interval_s, request_timeout_s)
    finally:
        if http_client is None:
            client.close()

    reasons: dict[str, list[str]] = {server: [reason] for server, reason in unusable.items()}
    took = {server: 0.0 for server in responders}
    for probe in probes:
        if probe.served_at is None:
            server_reasons = reasons.setdefault(probe.server, [])
            if probe.reason not in server_reasons:  # "connection refused" once, not once per token
                server_reasons.append(probe.reason)
        else:
            took[probe.server] = max(took[probe.server], probe.served_at - started)
    if reasons:
        lagging = {server: ", ".join(reasons[server]) for server in sorted(reasons)}
        raise ChallengeNotServed(
            f"challenge not served by {len(lagging)} of {len(responders)} servers within {deadline_s:g} s: "
            + "; ".join(f"{server}: {reason}" for server, reason in lagging.items()),
            lagging,
        )
    return took


def _poll(
    client: httpx.Client,
    probes: list[_Probe],
    deadline: float,
    poll_interval_s: float,
    request_timeout_s: float,
) -> None:
    """Poll until every probe is answered right (its ``served_at`` set) or ``deadline`` passes."""
    waiting = list(probes)  # not served, not in flight
    in_flight: dict[concurrent.futures.Future[str | None], _Probe] = {}
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, min(MAX_WORKERS, len(probes))), thread_name_prefix="selfcheck"
    )
    try:
        while waiting or in_flight:
            now = time.monotonic()
            if now >= deadline:
                break
            # Never let a request outlive the deadline by more than a moment.
            timeout = max(0.01, min(request_timeout_s, deadline - now))
            for probe in [p for p in waiting if p.due <= now]:
                waiting.remove(probe)
                in_flight[pool.submit(_probe, client, probe, timeout)] = probe
            next_due = min((p.due for p in waiting), default=deadline)
            pause = max(0.0, min(next_due, deadline) - now)
            if not in_flight:
                time.sleep(pause)  # every pair is between polls: sleep to the next one due
                continue
            done, _ = concurrent.futures.wait(
                in_flight, timeout=pause, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                probe = in_flight.pop(future)
                reason = future.result()
                answered = time.monotonic()
                if reason is None:
                    probe.served_at = answered
                else:
                    probe.reason = reason
                    probe.due = answered + poll_interval_s
                    waiting.append(probe)
    finally:
        # Requests still running at the deadline end on their own timeout; don't wait for them.
        pool.shutdown(wait=False, cancel_futures=True)


def _probe(client: httpx.Client, probe: _Probe, timeout: float) -> str | None:
    """One poll: ``None`` if the right key authorization came back, else why not (for the error)."""
    token = short_token(probe.token)
    try:
        response = client.get(probe.url, timeout=timeout)
    except httpx.TimeoutException:
        return f"no answer within {timeout:.2g} s for token {token}"
    except httpx.ConnectError as exc:
        text = str(exc)
        return "connection refused" if "refused" in text.lower() else f"cannot connect: {text}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # Any other transport failure is still this server's reason, never the certmgr's crash.
        return f"{type(exc).__name__}: {exc} for token {token}"
    if response.status_code != 200:
        return f"{response.status_code} for token {token}"
    if response.content != probe.expected:
        return f"wrong key authorization for token {token}"
    return None
