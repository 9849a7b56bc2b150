"""The hub stopped and restarted: agents behind their replicas keep serving, then catch up.

Each agent follows its own replica, which has continuous pull and push replications with the hub
(``_replicator`` documents on the replica's server, as ``certstore replicate add`` writes them). The
agents never see the outage; what this proves is that the replications resume once the hub is back,
so nothing written on the hub right after the restart is missed, and what the agents wrote to their
replicas meanwhile reaches the hub. On pouchdb-server that needs the node-fetch patch in
``node/patches/``: unpatched, a pull replication's long-poll on the hub never ends when the hub dies,
and the replication is never retried.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_ca import TestCA, request_doc, state_doc
from certmgr_fleet import Fleet, Host, add_host, agent_config, make_fleet, running_agent

from agent.config import AgentConfig
from agent.errors import CertificateError
from agent.hostagent import HostAgent
from agent.keys import certificate_info, key_matches_certificate
from store import ids
from store.couch import Database
from store.documents import Server
from store.follower import wait_for

pytestmark = pytest.mark.integration

NAMES = ("web1", "web2")
#: How long the replications get to resume and deliver after the restart. pouchdb's retry backs off
#: (random, doubling: a few seconds for a short outage); a stuck replication never delivers at all.
CATCH_UP_S = 45.0


def live_fingerprint(config: AgentConfig, keyfile: str) -> str | None:
    try:
        return certificate_info(
            (config.data_dir / "live" / keyfile / "cert.pem").read_bytes()
        ).fingerprint_sha256
    except (OSError, CertificateError):
        return None


def key_matches(config: AgentConfig, keyfile: str) -> bool:
    live = config.data_dir / "live" / keyfile
    return key_matches_certificate((live / "privkey.pem").read_bytes(), (live / "cert.pem").read_bytes())


def put(db: Database, doc: dict[str, Any]) -> None:
    current = db.get_or_none(doc["_id"])
    if current is not None:
        doc["_rev"] = current["_rev"]
    db.put(doc)


def challenge_doc(token: str) -> dict[str, Any]:
    return {
        "_id": ids.challenge_id(token),
        "type": "acme_challenge",
        "key_authorization": key_authorization(token),
        "hostnames": ["www.example.com"],
        "expires": "2099-01-01T00:00:00Z",
    }


def key_authorization(token: str) -> str:
    return token + "." + "A" * 43


def answers(agent: HostAgent, token: str) -> bool:
    """The agent's HTTP-01 responder serves ``token``'s key authorization."""
    assert agent.responder is not None
    try:
        response = httpx.get(f"{agent.responder.url}/.well-known/acme-challenge/{token}", timeout=5.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.text == key_authorization(token)


def heartbeat(db: Database, name: str) -> datetime | None:
    doc = db.get_or_none(ids.server_id(name))
    return Server.from_doc(doc).heartbeat if doc is not None else None


def deployed_serial(db: Database, name: str, credential: str) -> str | None:
    doc = db.get_or_none(ids.deploy_id(name, credential)) or {}
    return doc.get("serial") if doc.get("state") == "deployed" else None


@pytest.fixture
def servers(couch_servers: Any) -> list[Any]:
    """The two replicas' servers and the hub's, a server of its own that no other test restarts."""
    found = couch_servers(3)
    if not found[2].restartable:
        pytest.skip("restarts the hub: needs pouchdb-server nodes started by the tests")
    return list(found)


@pytest.fixture
def fleet(servers: list[Any], db_name: str, tmp_path: Path) -> Iterator[Fleet]:
    made = make_fleet(servers[2], db_name, tmp_path)
    yield made
    made.close()


@pytest.mark.timeout(240)
def test_hub_restart_agents_keep_serving_then_catch_up(
    fleet: Fleet, servers: list[Any], db_name: str, tmp_path: Path
) -> None:
    hub_server = servers[2]
    # web1's replica on one server, web2's on another: two pouchdb-server replicators must resume.
    hosts: dict[str, Host] = {
        name: add_host(fleet, name, server, server.db_name(f"{db_name}-{name}"), tmp_path)
        for name, server in zip(NAMES, servers[:2], strict=True)
    }
    configs = {
        name: agent_config(host, tmp_path, responder_host="127.0.0.1", responder_port=0)
        for name, host in hosts.items()
    }
    keys = {name: host.key.public_key for name, host in hosts.items()}
    ca = TestCA()
    first = ca.issue(["www.example.com"])
    token = "before" + "b" * 30
    with (
        running_agent(hosts["web1"], configs["web1"]) as web1,
        running_agent(hosts["web2"], configs["web2"]) as web2,
    ):
        agents = {"web1": web1, "web2": web2}
        put(fleet.hub, request_doc("site", ["www.example.com"], list(NAMES)))
        put(fleet.hub, state_doc("site", first, keys))
        put(fleet.hub, challenge_doc(token))
        assert wait_for(
            lambda: all(
                live_fingerprint(configs[n], "site") == first.fingerprint and answers(agents[n], token)
                for n in NAMES
            ),
            30,
        ), "the credential and the challenge did not reach both agents through their replicas"

        hub_server.stop()
        down_at = time.monotonic()
        try:
            # The agents keep their files and keep answering what they know.
            for name in NAMES:
                assert answers(agents[name], token), name
                assert live_fingerprint(configs[name], "site") == first.fingerprint, name
                assert key_matches(configs[name], "site"), name
            # ... and keep working on their replicas: a heartbeat written while the hub is away,
            # which the push replication must deliver once the hub is back.
            offline = {name: heartbeat(hosts[name].db, name) for name in NAMES}
            assert wait_for(lambda: all(heartbeat(hosts[n].db, n) != offline[n] for n in NAMES), 10), (
                "the agents stopped writing heartbeats to their replicas"
            )
            offline = {name: heartbeat(hosts[name].db, name) for name in NAMES}
            for name in NAMES:
                assert answers(agents[name], token), name
        finally:
            hub_server.start()  # same port, same data
        outage = time.monotonic() - down_at

        # Changes written on the hub right after the restart: a renewal, a new credential, a new
        # challenge. Both agents must converge to all of them.
        restarted_at = time.monotonic()
        renewed = ca.issue(["www.example.com"])
        second = ca.issue(["second.example.com"])
        new_token = "after" + "a" * 30
        put(fleet.hub, state_doc("site", renewed, keys))
        put(fleet.hub, request_doc("second", ["second.example.com"], list(NAMES)))
        put(fleet.hub, state_doc("second", second, keys))
        put(fleet.hub, challenge_doc(new_token))

        def converged(name: str) -> bool:
            return (
                live_fingerprint(configs[name], "site") == renewed.fingerprint
                and live_fingerprint(configs[name], "second") == second.fingerprint
                and answers(agents[name], new_token)
            )

        assert wait_for(lambda: all(converged(n) for n in NAMES), CATCH_UP_S, interval=0.1), {
            name: {
                "site": live_fingerprint(configs[name], "site") == renewed.fingerprint,
                "second": live_fingerprint(configs[name], "second") == second.fingerprint,
                "challenge": answers(agents[name], new_token),
            }
            for name in NAMES
        }
        pulled = time.monotonic() - restarted_at
        for name in NAMES:
            assert key_matches(configs[name], "site") and key_matches(configs[name], "second"), name
            assert answers(agents[name], token), name  # the old challenge is still served

        # The other direction: what the agents wrote while the hub was away, and their reports on
        # the new versions, reach the hub.
        def pushed(name: str) -> bool:
            at_hub = heartbeat(fleet.hub, name)
            return (
                at_hub is not None
                and offline[name] is not None
                and at_hub >= offline[name]
                and deployed_serial(fleet.hub, name, "site") == renewed.serial
                and deployed_serial(fleet.hub, name, "second") == second.serial
            )

        assert wait_for(lambda: all(pushed(n) for n in NAMES), CATCH_UP_S, interval=0.1), {
            name: (heartbeat(fleet.hub, name), offline[name], deployed_serial(fleet.hub, name, "site"))
            for name in NAMES
        }
        print(
            f"hub down {outage:.1f}s; after the restart both agents held every change in {pulled:.1f}s,"
            f" the hub had their reports in {time.monotonic() - restarted_at:.1f}s"
        )
