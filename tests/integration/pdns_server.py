"""A PowerDNS authoritative server (``pdns_server``, SQLite backend) on free loopback ports, for tests.

It serves DNS on ``dns_address`` and its HTTP API (the one dns-lexicon's ``powerdns`` provider drives) on
``api_url`` with ``api_key``. Caches are off, so a change through the API is visible to the next query.
Debian packages: ``pdns-server`` and ``pdns-backend-sqlite3``.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from store.localservices import LOOPBACK, find_binary, free_port, free_udp_tcp_port

SCHEMA_FILES = (
    Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"),
    Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
)
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class PdnsServer:
    """How to reach a running pdns_server."""

    host: str
    dns_port: int
    api_url: str
    api_key: str

    @property
    def dns_address(self) -> str:
        return f"{self.host}:{self.dns_port}"

    def create_zone(self, zone: str) -> None:
        """Create a native zone with an NS record, through the API."""
        fqdn = zone.rstrip(".") + "."
        body = {"name": fqdn, "kind": "Native", "nameservers": [f"ns1.{fqdn}"]}
        self.api("POST", "/zones", json=body).raise_for_status()

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """A request to ``/api/v1/servers/localhost<path>`` with the API key."""
        return httpx.request(
            method,
            f"{self.api_url}/api/v1/servers/localhost{path}",
            headers={"X-API-Key": self.api_key},
            timeout=5,
            **kwargs,  # type: ignore[arg-type]
        )


def missing_reason() -> str | None:
    """Why pdns_server cannot run here (for pytest.skip), or None."""
    if find_binary("pdns_server") is None:
        return "pdns_server is not installed (Debian packages pdns-server, pdns-backend-sqlite3)"
    if not any(path.is_file() for path in SCHEMA_FILES):
        return "the PowerDNS SQLite schema is missing (Debian package pdns-backend-sqlite3)"
    return None


@contextmanager
def running_pdns(data_dir: Path) -> Iterator[PdnsServer]:
    """Start pdns_server in the foreground in ``data_dir``; stop it (only it) on exit."""
    binary = find_binary("pdns_server")
    assert binary is not None, missing_reason()
    schema = next(path for path in SCHEMA_FILES if path.is_file())
    data_dir.mkdir(parents=True, exist_ok=True)
    database = data_dir / "pdns.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.executescript(schema.read_text())
    connection.close()
    dns_port, api_port, api_key = free_udp_tcp_port(), free_port(), secrets.token_urlsafe(16)
    (data_dir / "pdns.conf").write_text(
        "\n".join(
            [
                "launch=gsqlite3",
                f"gsqlite3-database={database}",
                f"local-address={LOOPBACK}",
                f"local-port={dns_port}",
                "api=yes",
                f"api-key={api_key}",
                "webserver=yes",
                f"webserver-address={LOOPBACK}",
                f"webserver-port={api_port}",
                "webserver-allow-from=127.0.0.0/8",
                "cache-ttl=0",
                "negquery-cache-ttl=0",
                "query-cache-ttl=0",
                "zone-cache-refresh-interval=0",
                "security-poll-suffix=",  # no status lookups on the internet
                "",
            ]
        )
    )
    argv = [
        binary,
        f"--config-dir={data_dir}",
        f"--socket-dir={data_dir}",
        "--guardian=no",
        "--daemon=no",
        "--disable-syslog",
        "--write-pid=no",
    ]
    server = PdnsServer(LOOPBACK, dns_port, f"http://{LOOPBACK}:{api_port}", api_key)
    log_file = data_dir / "pdns.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_ready(server, process, log_file)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: PdnsServer, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pdns_server exited ({process.returncode}):\n{_tail(log_file)}")
        try:
            if server.api("GET", "").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"pdns_server not ready within {START_TIMEOUT:g} s:\n{_tail(log_file)}")
        time.sleep(0.05)


def _tail(log_file: Path) -> str:
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
