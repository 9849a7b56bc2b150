"""Reload hooks run as argv lists with a timeout; the live check reads the served certificate over TLS."""

from __future__ import annotations

import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from agent.config import HookConfig
from agent.hooks import live_check, run_hook, served_fingerprint


def test_hook_ok_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['CERTSTORE_KEYFILE'])"
    result = run_hook(HookConfig("reload", (sys.executable, "-c", code)), {"CERTSTORE_KEYFILE": "web"})
    assert result.ok, result.message
    assert out.read_text() == "web"


def test_hook_failure_reports_status_and_output() -> None:
    code = "import sys; print('nginx: bad config'); sys.exit(3)"
    result = run_hook(HookConfig("reload", (sys.executable, "-c", code)))
    assert not result.ok
    assert "exit status 3" in result.message and "nginx: bad config" in result.message


def test_hook_timeout_kills_it() -> None:
    result = run_hook(HookConfig("slow", (sys.executable, "-c", "import time; time.sleep(30)"), timeout=0.3))
    assert not result.ok and "timed out" in result.message


def test_hook_is_never_a_shell_line(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = run_hook(HookConfig("bad", (f"true; touch {marker}",)))
    assert not result.ok and "cannot run" in result.message
    assert not marker.exists()


@pytest.fixture
def tls_server() -> Iterator[tuple[int, str]]:
    """A TLS listener on loopback serving a trustme certificate; yields (port, leaf fingerprint)."""
    import hashlib
    import socket

    ca = trustme.CA()
    leaf = ca.issue_cert("www.example.com")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], hashlib.sha256(der).hexdigest()
    stop.set()
    thread.join()
    listener.close()


def test_live_check_sees_the_served_certificate(tls_server: tuple[int, str]) -> None:
    port, fingerprint = tls_server
    assert served_fingerprint("127.0.0.1", port, "www.example.com") == fingerprint
    assert live_check(f"127.0.0.1:{port}", "www.example.com", fingerprint, deadline_s=5).ok
    other = live_check(f"127.0.0.1:{port}", "www.example.com", "0" * 64, deadline_s=0.3, interval_s=0.1)
    assert not other.ok and "another certificate" in other.message


def test_live_check_reports_a_closed_port() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = live_check(f"127.0.0.1:{port}", "www.example.com", "0" * 64, deadline_s=0.3, interval_s=0.1)
    assert not result.ok and str(port) in result.message
