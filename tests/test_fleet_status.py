"""agent/fleet_status.py: lights, deployments and heartbeats from synthetic documents at a fixed time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from corpus import CHAIN, SEALED, variant
from rich.console import Console

from agent import cli_status
from agent.fleet_status import (
    CredentialStatus,
    DeployState,
    FleetStatus,
    Light,
    Thresholds,
    from_docs,
    human_duration,
    to_json,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def request(name: str, servers: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "_id": f"credential:{name}",
        "type": "tls_credential",
        "hostnames": [f"{name}.example.com"],
        "servers": servers,
        **fields,
    }


def state(
    name: str, status: str = "issued", *, serial: str = "0a1b", days_left: float = 60, **fields: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": f"credential:{name}:state",
        "type": "tls_credential_state",
        "status": status,
    }
    if status in ("issued", "renew"):
        doc.update(
            chain_pem=CHAIN,
            not_before=stamp(NOW - timedelta(days=30)),
            not_after=stamp(NOW + timedelta(days=days_left)),
            serial=serial,
            fingerprint_sha256="ab" * 32,
            sealed_key=SEALED,
            recipients=["web1", "web2"],
            next_renewal=stamp(NOW + timedelta(days=days_left / 3)),
        )
    doc.update(fields)
    return doc


def deploy(server: str, name: str, serial: str | None = "0a1b", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": f"deploy:{server}:{name}", "type": "deployment", **fields}
    if serial is not None:
        doc.update(serial=serial, deployed_at=stamp(NOW - timedelta(hours=1)))
    return doc


def server(name: str, heartbeat_ago: timedelta | None, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": f"server:{name}", "type": "server", **fields}
    if heartbeat_ago is not None:
        doc["heartbeat"] = stamp(NOW - heartbeat_ago)
    return doc


def only(status: FleetStatus) -> CredentialStatus:
    (credential,) = status.credentials
    return credential


def healthy(name: str = "web") -> list[dict[str, Any]]:
    return [request(name, ["web1", "web2"]), state(name), deploy("web1", name), deploy("web2", name)]


# --- the light ---------------------------------------------------------------------------------


def test_issued_and_deployed_everywhere_is_green() -> None:
    credential = only(from_docs(healthy(), NOW))
    assert credential.light is Light.GREEN
    assert credential.reasons == ()
    assert credential.status_text == "issued"
    assert [d.state for d in credential.deployments] == [DeployState.CURRENT, DeployState.CURRENT]


def test_a_request_the_certmgr_has_not_seen_is_yellow() -> None:
    credential = only(from_docs([request("web", ["web1"])], NOW))
    assert credential.light is Light.YELLOW
    assert credential.status is None
    assert credential.status_text == "not picked up yet"
    assert "not picked the request up" in credential.reasons[0]
    assert [(d.server, d.state) for d in credential.deployments] == [("web1", DeployState.MISSING)]


@pytest.mark.parametrize("status", ["pending", "waiting", "renew", "draft"])
def test_work_in_progress_statuses_are_yellow(status: str) -> None:
    docs = [request("web", []), state("web", status)]
    assert only(from_docs(docs, NOW)).light is Light.YELLOW


@pytest.mark.parametrize("status", ["error", "revoked", "expired"])
def test_failed_statuses_are_red(status: str) -> None:
    docs = [request("web", []), state("web", status, status_message="boom")]
    credential = only(from_docs(docs, NOW))
    assert credential.light is Light.RED
    assert credential.reasons == (f"status is {status}",)
    assert credential.status_message == "boom"


def test_archived_is_not_an_alarm() -> None:
    assert only(from_docs([request("web", []), state("web", "archived")], NOW)).light is Light.GREEN


def test_a_passed_renewal_date_is_yellow() -> None:
    docs = [request("web", []), state("web", next_renewal=stamp(NOW - timedelta(minutes=1)))]
    credential = only(from_docs(docs, NOW))
    assert (credential.light, credential.reasons) == (Light.YELLOW, ("the renewal date has passed",))


def test_near_expiry_is_red_with_a_configurable_window() -> None:
    docs = [request("web", []), state("web", days_left=5, next_renewal=stamp(NOW - timedelta(days=25)))]
    credential = only(from_docs(docs, NOW))
    assert credential.light is Light.RED
    assert credential.reasons == ("expires in 5 days", "the renewal date has passed")
    assert only(from_docs(docs, NOW, Thresholds(expiry_warning=timedelta(days=3)))).light is Light.YELLOW


def test_expired_certificate_is_red() -> None:
    docs = [request("web", []), state("web", days_left=-2)]
    credential = only(from_docs(docs, NOW))
    assert credential.light is Light.RED
    assert "expired 2 days ago" in credential.reasons


def test_expiry_only_counts_while_the_certificate_is_in_use() -> None:
    old = stamp(NOW - timedelta(days=1))
    docs = [request("web", []), state("web", "revoked", not_after=old, next_renewal=old)]
    assert only(from_docs(docs, NOW)).reasons == ("status is revoked",)


# --- deployments -------------------------------------------------------------------------------


def test_each_server_is_compared_with_the_current_serial() -> None:
    docs = [
        request("web", ["web1", "web2", "web3", "web4"]),
        state("web", serial="0a1c"),
        deploy("web1", "web"),  # the old serial
        deploy("web2", "web", serial="0a1c", live_check={"ok": True, "at": stamp(NOW)}),
        deploy("web3", "web", serial=None, error="hook nginx failed"),
        # web4 has written nothing yet; old1 lost its access but still reports
        deploy("old1", "web", serial="0a1c"),
    ]
    credential = only(from_docs(docs, NOW))
    states = {d.server: d.state for d in credential.deployments}
    assert states == {
        "old1": DeployState.NO_ACCESS,
        "web1": DeployState.OUTDATED,
        "web2": DeployState.CURRENT,
        "web3": DeployState.ERROR,
        "web4": DeployState.MISSING,
    }
    assert [d.server for d in credential.deployments] == ["old1", "web1", "web2", "web3", "web4"]
    assert credential.light is Light.YELLOW
    assert credential.reasons == (
        "web1 holds another serial",
        "web3 failed to deploy it",
        "web4 has not deployed it",
    )
    web2 = credential.deployments[2]
    assert (web2.live_check_ok, web2.deployed_at) == (True, NOW - timedelta(hours=1))
    assert credential.deployments[3].error == "hook nginx failed"


def test_deployments_do_not_matter_before_issuance() -> None:
    docs = [request("web", ["web1"]), state("web", "pending")]
    assert only(from_docs(docs, NOW)).reasons == ("status is pending",)


def test_a_state_without_its_request_shows_what_is_left_deployed() -> None:
    docs = [state("gone", hostnames=["gone.example.com"]), deploy("web1", "gone")]
    credential = only(from_docs(docs, NOW))
    assert not credential.requested
    assert credential.hostnames == ("gone.example.com",)
    assert credential.servers == ()
    assert [(d.server, d.state) for d in credential.deployments] == [("web1", DeployState.NO_ACCESS)]
    assert credential.reasons == ("the request (credential document) has been deleted",)


# --- servers -----------------------------------------------------------------------------------


def test_servers_with_heartbeat_age_and_staleness() -> None:
    docs = [
        server("web1", timedelta(seconds=30), agent_version="0.3.0", roles=["agent"]),
        server("web2", timedelta(hours=2)),
        server("new", None),
    ]
    status = from_docs(docs, NOW)
    by_name = {s.name: s for s in status.servers}
    assert [s.name for s in status.servers] == ["new", "web1", "web2"]
    assert by_name["web1"].heartbeat_age == timedelta(seconds=30)
    assert (by_name["web1"].stale, by_name["web1"].agent_version) == (False, "0.3.0")
    assert by_name["web2"].stale and by_name["new"].stale
    assert by_name["new"].heartbeat_age is None and not by_name["new"].enrolled
    relaxed = from_docs(docs, NOW, Thresholds(stale_after=timedelta(hours=3)))
    assert [s.stale for s in relaxed.servers] == [True, False, False]


# --- robustness --------------------------------------------------------------------------------


def test_an_empty_database_and_unrelated_documents() -> None:
    docs: list[dict[str, Any]] = [
        {"_id": "_design/certstore", "language": "javascript"},
        {"_id": "settings", "type": "settings"},
        {"_id": "lease:certmgr", "type": "lease", "holder": "x"},  # invalid, but not read by status
        {"_id": "credential:gone", "_deleted": True},
    ]
    status = from_docs(docs, NOW)
    assert (status.credentials, status.servers, status.invalid) == ((), (), ())
    assert from_docs([], NOW).count(Light.GREEN) == 0


def test_invalid_documents_are_listed_not_fatal() -> None:
    bad = variant(state("web"), serial="NOT HEX")
    docs = [request("web", []), bad, {"_id": "nonsense", "type": "x"}]
    status = from_docs(docs, NOW)
    assert only(status).status is None  # the broken state is skipped
    assert [item.doc_id for item in status.invalid] == ["credential:web:state", "nonsense"]
    assert "serial" in status.invalid[0].message


# --- JSON --------------------------------------------------------------------------------------


def test_json_has_stable_keys_and_iso_timestamps() -> None:
    docs = [
        *healthy(),
        request("new", ["web1"]),
        server("web1", timedelta(seconds=90), agent_version="0.3.0"),
    ]
    data = to_json(from_docs(docs, NOW))
    assert json.loads(json.dumps(data)) == data
    assert list(data) == ["now", "summary", "credentials", "servers", "invalid"]
    assert data["now"] == "2026-03-01T12:00:00Z"
    assert data["summary"] == {"green": 1, "yellow": 1, "red": 0}
    new, web = data["credentials"]
    assert new == {
        "name": "new",
        "light": "yellow",
        "reasons": ["the certmgr has not picked the request up yet"],
        "status": None,
        "status_message": None,
        "requested": True,
        "hostnames": ["new.example.com"],
        "servers": ["web1"],
        "serial": None,
        "not_after": None,
        "next_renewal": None,
        "deployments": [
            {
                "server": "web1",
                "state": "missing",
                "serial": None,
                "deployed_at": None,
                "error": None,
                "paths": [],
                "live_check_ok": None,
                "live_check_message": None,
            }
        ],
    }
    assert web["not_after"] == "2026-04-30T12:00:00Z"
    assert web["deployments"][0]["deployed_at"] == "2026-03-01T11:00:00Z"
    assert data["servers"] == [
        {
            "name": "web1",
            "enrolled": False,
            "roles": [],
            "heartbeat": "2026-03-01T11:58:30Z",
            "heartbeat_age_seconds": 90.0,
            "stale": False,
            "agent_version": "0.3.0",
            "responder_url": None,
        }
    ]


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=5), "5 s"),
        (timedelta(minutes=12, seconds=59), "12 min"),
        (timedelta(hours=5, minutes=1), "5 h"),
        (timedelta(days=1, hours=23), "1 day"),
        (timedelta(days=-3), "3 days"),
    ],
)
def test_human_duration(delta: timedelta, text: str) -> None:
    assert human_duration(delta) == text


def test_render_shows_every_table_and_the_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(record=True, width=200)
    monkeypatch.setattr(cli_status, "out", console)
    docs = [
        *healthy(),
        request("bad", ["web1"]),
        state("bad", "error", status_message="rate limited"),
        server("web1", timedelta(hours=1)),
    ]
    cli_status.render(from_docs(docs, NOW))
    text = console.export_text()
    for title in ("Credentials", "Deployments", "Servers"):
        assert title in text
    assert "bad: status is error (rate limited)" in text
    assert "1 h ago (stale)" in text
    assert "2 credentials (1 green, 0 yellow, 1 red), 1 servers" in text


def test_render_prints_messages_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(record=True, width=200)
    monkeypatch.setattr(cli_status, "out", console)
    docs = [
        request("web", ["web1"]),
        state("web", "error", status_message="[bold]rate[/bold] :smile:"),
        deploy("web1", "web", live_check={"ok": False, "at": stamp(NOW), "message": "[errno] refused"}),
        server("web1", timedelta(seconds=1), agent_version="[dim]0.3[/dim]"),
    ]
    cli_status.render(from_docs(docs, NOW))
    text = console.export_text()
    for literal in ("[bold]rate[/bold] :smile:", "failed: [errno] refused", "[dim]0.3[/dim]"):
        assert literal in text
