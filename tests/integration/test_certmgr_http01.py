"""The certmgr against real pebble and real replicas: HTTP-01 answered by every server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from certmgr_fleet import Fleet, add_host, make_fleet, running_certmgr

from agent.admin import add_account, add_credential
from agent.keys import key_matches_certificate, split_chain, verify_chain
from store import ids
from store.follower import wait_for
from store.names import Status
from store.sealing import open_private_key_pem

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(couch_servers: Any, db_name: str, tmp_path: Path) -> Iterator[Fleet]:
    hub_server = couch_servers(2)[0]
    made = make_fleet(hub_server, db_name, tmp_path)
    yield made
    made.close()


def test_multi_san_idn_certificate_over_http01_served_by_two_replicas(
    fleet: Fleet, couch_servers: Any, db_name: str, pebble: Any, a_records: Any, tmp_path: Path
) -> None:
    _hub, replica_server = couch_servers(2)
    # Each server answers on its own loopback address, the port pebble validates on.
    web1 = add_host(
        fleet,
        "web1",
        replica_server,
        replica_server.db_name(db_name + "-web1"),
        tmp_path,
        responder_host="127.0.0.1",
        responder_port=pebble.http_port,
    )
    web2 = add_host(
        fleet,
        "web2",
        replica_server,
        replica_server.db_name(db_name + "-web2"),
        tmp_path,
        responder_host="127.0.0.2",
        responder_port=pebble.http_port,
    )
    a_records("xn--bcher-kva.example", ["127.0.0.2"])
    a_records("shop.example", ["127.0.0.2"])

    add_account(fleet.hub, "pebble", pebble.directory_url, email="admin@example.com", agree_tos=True)
    credential = add_credential(
        fleet.hub,
        "site",
        ["www.example.com", "Bücher.example", "shop.example"],
        servers=["web1", "web2"],
        account="pebble",
    )
    assert credential.hostnames == ["www.example.com", "xn--bcher-kva.example", "shop.example"]

    with running_certmgr(fleet, str(pebble.ca_file)):
        state = fleet.wait_status("site", Status.ISSUED, Status.ERROR)
    assert state.status is Status.ISSUED, state.status_message
    assert state.chain_pem is not None and state.sealed_key is not None
    chain = split_chain(state.chain_pem.encode())
    verify_chain(chain, pebble.root_pem().encode())
    for host in (web1, web2):
        key = open_private_key_pem(state.sealed_key, host.key)
        assert key_matches_certificate(key, chain[0])
    assert sorted(state.recipients) == ["certmgr", "web1", "web2"]
    assert state.next_renewal is not None and state.not_after is not None
    assert state.not_before is not None and state.not_before < state.next_renewal < state.not_after
    # Challenge documents are gone after validation.
    rows = fleet.hub.all_docs(startkey="challenge:", endkey="challenge:\ufff0")["rows"]
    assert rows == []


def test_unreachable_server_is_named_and_the_loop_goes_on(
    fleet: Fleet, couch_servers: Any, db_name: str, pebble: Any, tmp_path: Path
) -> None:
    _hub, replica_server = couch_servers(2)
    add_host(
        fleet,
        "web1",
        replica_server,
        replica_server.db_name(db_name + "-web1"),
        tmp_path,
        responder_host="127.0.0.1",
        responder_port=pebble.http_port,
    )
    lagging = add_host(
        fleet,
        "web3",
        replica_server,
        replica_server.db_name(db_name + "-web3"),
        tmp_path,
        responder_host="127.0.0.3",
        responder_port=pebble.http_port,
    )
    assert lagging.responder is not None
    lagging.responder.stop()  # web3 advertises a responder that does not answer
    add_account(fleet.hub, "pebble", pebble.directory_url, agree_tos=True)
    add_credential(fleet.hub, "lagging", ["lag.example.com"], servers=["web1"], account="pebble")
    add_credential(fleet.hub, "unknown-server", ["x.example.com"], servers=["web9"], account="pebble")
    add_credential(fleet.hub, "no-account", ["y.example.com"], servers=["web1"], account="nobody")

    from agent.solver import SolverSettings

    with running_certmgr(fleet, str(pebble.ca_file), solver=SolverSettings(serve_deadline_s=2.0)) as certmgr:
        unknown = fleet.wait_status("unknown-server", Status.ERROR)
        no_account = fleet.wait_status("no-account", Status.ERROR)
        lag = fleet.wait_status("lagging", Status.ERROR)
        # The loop still serves the rest: a good credential issues after the failures.
        fleet.hosts["web3"].db.delete(
            ids.server_id("web3"), fleet.hosts["web3"].db.get(ids.server_id("web3"))["_rev"]
        )
        # (web3 is retired first, so that its dead responder no longer fails every order.)
        assert wait_for(lambda: certmgr.mirror_heartbeat("web3") is None, 20)
        add_credential(fleet.hub, "good", ["ok.example.com"], servers=["web1"], account="pebble")
        good = fleet.wait_status("good", Status.ISSUED, Status.ERROR)
    assert 'unknown server "web9"' in (unknown.status_message or "")
    assert 'unknown account "nobody"' in (no_account.status_message or "")
    assert "web3" in (lag.status_message or "") and "next attempt" in (lag.status_message or "")
    assert good.status is Status.ISSUED, good.status_message
