"""`certstore status` against a real database holding synthetic state, deploy and server documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from corpus import CHAIN, SEALED

from store.couch import CouchClient, Database
from store.names import format_timestamp
from store.provision import init_database

pytestmark = pytest.mark.integration


def certstore(*args: str) -> subprocess.CompletedProcess[str]:
    # A wide console, so table cells are not wrapped in the middle of what the test looks for.
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def ago(**delta: float) -> str:
    return format_timestamp(datetime.now(UTC).replace(microsecond=0) - timedelta(**delta))


def write_fleet(db: Database) -> None:
    """Two credentials (one issued and half deployed, one failing), a request not yet seen, two servers."""
    docs: list[dict[str, Any]] = [
        {
            "_id": "credential:web",
            "type": "tls_credential",
            "hostnames": ["www.example.com"],
            "servers": ["web1", "web2"],
        },
        {
            "_id": "credential:web:state",
            "type": "tls_credential_state",
            "status": "issued",
            "chain_pem": CHAIN,
            "not_before": ago(days=10),
            "not_after": ago(days=-80),
            "serial": "0a1b2c",
            "fingerprint_sha256": "ab" * 32,
            "sealed_key": SEALED,
            "recipients": ["web1", "web2"],
            "next_renewal": ago(days=-50),
        },
        {
            "_id": "deploy:web1:web",
            "type": "deployment",
            "serial": "0a1b2c",
            "deployed_at": ago(minutes=5),
            "paths": ["/var/lib/certstore/data/web/cert.pem"],
            "live_check": {"ok": True, "at": ago(minutes=5)},
        },
        {
            "_id": "credential:api",
            "type": "tls_credential",
            "hostnames": ["api.example.com"],
            "servers": ["web2"],
        },
        {
            "_id": "credential:api:state",
            "type": "tls_credential_state",
            "status": "error",
            "status_message": "rateLimited: too many certificates [see https://example.com/limits]",
        },
        {"_id": "credential:new", "type": "tls_credential", "hostnames": ["new.example.com"]},
        {"_id": "server:web1", "type": "server", "heartbeat": ago(seconds=20), "agent_version": "0.3.0"},
        {"_id": "server:web2", "type": "server", "heartbeat": ago(hours=3)},
    ]
    for doc in docs:
        db.put(doc)


@pytest.fixture
def admin_db(couch_server: Any, db_name: str) -> Database:
    client = CouchClient(couch_server.admin_url)
    name = couch_server.db_name(db_name)
    init_database(client, name)
    return client.db(name)


def test_status_of_a_database_without_state_documents(couch_server: Any, admin_db: Database) -> None:
    result = certstore("status", "--url", couch_server.admin_url, "--db", admin_db.name, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["credentials"], data["servers"], data["invalid"]) == ([], [], [])

    table = certstore("status", "--url", couch_server.admin_url, "--db", admin_db.name)
    assert table.returncode == 0, table.stderr
    assert "no credentials yet" in table.stdout


def test_status_json_and_tables(couch_server: Any, admin_db: Database) -> None:
    write_fleet(admin_db)
    result = certstore("status", "--url", couch_server.admin_url, "--db", admin_db.name, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["summary"] == {"green": 0, "yellow": 2, "red": 1}
    by_name = {c["name"]: c for c in data["credentials"]}
    assert list(by_name) == ["api", "new", "web"]
    assert by_name["api"]["light"] == "red"
    assert by_name["api"]["status_message"].endswith("[see https://example.com/limits]")
    assert by_name["new"]["status"] is None
    web = by_name["web"]
    assert (web["light"], web["reasons"]) == ("yellow", ["web2 has not deployed it"])
    assert [(d["server"], d["state"], d["serial"]) for d in web["deployments"]] == [
        ("web1", "current", "0a1b2c"),
        ("web2", "missing", None),
    ]
    servers = {s["name"]: s for s in data["servers"]}
    assert not servers["web1"]["stale"] and servers["web1"]["agent_version"] == "0.3.0"
    assert servers["web2"]["stale"]

    table = certstore("status", "--url", couch_server.admin_url, "--db", admin_db.name)
    assert table.returncode == 0, table.stderr
    for text in ("Credentials", "Deployments", "Servers", "0a1b2c", "not picked up yet", "(stale)"):
        assert text in table.stdout
    assert (
        "api: status is error (rateLimited: too many certificates [see https://example.com/limits])"
        in table.stdout
    )
    assert couch_server.admin_password not in table.stdout + table.stderr


def test_a_missing_database_is_a_one_line_error(couch_server: Any, db_name: str) -> None:
    result = certstore("status", "--url", couch_server.admin_url, "--db", couch_server.db_name(db_name))
    assert result.returncode == 1
    assert result.stderr.startswith("certstore: error:") and len(result.stderr.splitlines()) == 1
    assert couch_server.admin_password not in result.stderr
