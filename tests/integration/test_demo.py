"""The README's main job in once mode: a whole fleet issues and deploys both certificates."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.demo import CREDENTIALS, SERVERS
from agent.keys import key_matches_certificate

pytestmark = pytest.mark.integration


def test_demo_once_ends_with_every_server_holding_both_certificates(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--dir", str(directory), "--once"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "every server holds both certificates" in output
    assert "Traceback" not in output
    assert "/_utils" in output
    for server in SERVERS:
        for name in CREDENTIALS:
            live = directory / server / "data" / "live" / name
            key, cert = (live / "privkey.pem").read_bytes(), (live / "cert.pem").read_bytes()
            assert key_matches_certificate(key, cert), f"{server}/{name}"
            assert stat.S_IMODE((live / "privkey.pem").stat().st_mode) == 0o600
    # Stopped cleanly: a second run in the same directory starts from a clean slate and passes too.
    assert not (directory / "services" / "state.json").exists()
