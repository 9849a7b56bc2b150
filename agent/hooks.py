"""Reload hooks (an argv run with a timeout, never through a shell) and the live TLS check.

A hook is named by a tag on the credential request and configured on each host, so a document can
never make a host run a command of its choosing. The live check connects to ``host:port`` with SNI
set to the credential's first host name and compares the served leaf's SHA-256 fingerprint with the
deployed one, retrying until a deadline because a service may take a moment to reload.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.config import HookConfig

#: How much of a failing hook's output goes into the report (the last characters, one line).
_OUTPUT_LIMIT = 300


@dataclass(frozen=True)
class StepResult:
    """The outcome of a hook or a live check, as recorded on the ``deploy:`` document."""

    ok: bool
    message: str


def _tail(output: bytes) -> str:
    text = output.decode(errors="replace").strip().replace("\n", " | ")
    return text[-_OUTPUT_LIMIT:]


def run_hook(hook: HookConfig, extra_env: Mapping[str, str] | None = None) -> StepResult:
    """Run ``hook.command``; ok on exit 0 within ``hook.timeout``. The process group is killed on timeout."""
    env = {**os.environ, **(extra_env or {})}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(hook.command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )
    except OSError as exc:
        return StepResult(False, f"hook {hook.name}: cannot run {hook.command[0]}: {exc.strerror}")
    try:
        output, _ = proc.communicate(timeout=hook.timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return StepResult(False, f"hook {hook.name}: timed out after {hook.timeout:g}s")
    took = time.monotonic() - started
    if proc.returncode != 0:
        detail = _tail(output)
        return StepResult(
            False, f"hook {hook.name}: exit status {proc.returncode}" + (f": {detail}" if detail else "")
        )
    return StepResult(True, f"hook {hook.name}: ok in {took:.2f}s")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into ``(host, port)`` (validated earlier by names.endpoint_problem)."""
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def served_fingerprint(host: str, port: int, server_name: str, *, timeout: float = 5.0) -> str:
    """SHA-256 (lowercase hex) of the leaf certificate ``host:port`` serves for SNI ``server_name``.

    Nothing is verified: the point is to see *which* certificate is served, not to trust it.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with context.wrap_socket(sock, server_hostname=server_name.removeprefix("*.")) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return hashlib.sha256(der).hexdigest()


def live_check(
    endpoint: str,
    server_name: str,
    expected_fingerprint: str,
    *,
    deadline_s: float = 10.0,
    interval_s: float = 0.25,
    fetch: Callable[[str, int, str], str] | None = None,
) -> StepResult:
    """Poll ``endpoint`` until it serves the expected certificate or ``deadline_s`` passes."""
    host, port = split_endpoint(endpoint)
    get = fetch or (lambda h, p, sni: served_fingerprint(h, p, sni, timeout=min(5.0, deadline_s)))
    end = time.monotonic() + deadline_s
    last = "no attempt"
    while True:
        try:
            seen = get(host, port, server_name)
            if seen == expected_fingerprint:
                return StepResult(True, f"{endpoint} serves the new certificate (SNI {server_name})")
            last = f"{endpoint} still serves another certificate (sha256 {seen[:16]}…)"
        except (OSError, ssl.SSLError) as exc:
            last = f"{endpoint}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
        if time.monotonic() + interval_s > end:
            return StepResult(False, last)
        time.sleep(interval_s)
