"""A server's replica holds what that server needs (not the other servers' heartbeats and reports)
and sends back only what that server writes."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from store import ids, replication
from store.couch import CouchClient, Database
from store.documents import Deployment, Server, TlsCredential
from store.errors import CertstoreError
from store.follower import wait_for
from store.ids import replication_doc_id, replication_name
from store.provision import init_database

pytestmark = pytest.mark.integration


def replica(
    hub: Any, hub_db: str, server: Any, db_name: str, name: str, *, push_all: bool = False
) -> Database:
    client = CouchClient(server.admin_url)
    init_database(client, db_name)
    replication.add(
        client,
        replication.Endpoint(hub.admin_url, hub_db),
        replication.Endpoint(server.admin_url, db_name),
        name=name,
        server=name,
        push_all=push_all,
    )
    return client.db(db_name)


def test_filtered_replicas_carry_only_their_own_reports(couch_servers: Any, db_name: str) -> None:
    hub_server, node = couch_servers(2)
    hub_db = hub_server.db_name(db_name)
    hub_client = CouchClient(hub_server.admin_url)
    init_database(hub_client, hub_db)
    hub = hub_client.db(hub_db)
    web1 = replica(hub_server, hub_db, node, node.db_name(db_name + "-web1"), "web1")
    web2 = replica(hub_server, hub_db, node, node.db_name(db_name + "-web2"), "web2")

    hub.put(TlsCredential.create("site", ["www.example.com"], servers=["web1", "web2"]).to_doc())
    for name, db in (("web1", web1), ("web2", web2)):
        db.put(Server(name=name).to_doc())
        db.put(Deployment(server=name, credential="site").to_doc())

    def on(db: Database, doc_id: str) -> bool:
        return db.get_or_none(doc_id) is not None

    for name in ("web1", "web2"):
        assert wait_for(lambda n=name: on(hub, ids.deploy_id(n, "site")) and on(hub, ids.server_id(n)), 20)
    for db in (web1, web2):
        assert wait_for(lambda d=db: on(d, ids.credential_id("site")), 20), (
            "the request did not reach a replica"
        )
    # A marker written last on the hub reaches both replicas: everything before it has been replicated.
    hub.put(TlsCredential.create("marker", ["marker.example.com"]).to_doc())
    assert wait_for(
        lambda: on(web1, ids.credential_id("marker")) and on(web2, ids.credential_id("marker")), 20
    )
    assert not on(web1, ids.deploy_id("web2", "site")) and not on(web1, ids.server_id("web2"))
    assert not on(web2, ids.deploy_id("web1", "site")) and not on(web2, ids.server_id("web1"))
    listed = replication.list_replications(CouchClient(node.admin_url))
    assert {r.name for r in listed} >= {"web1", "web2"}
    # Only a server's own documents go back to the hub: a request written on web1's replica (which
    # web1's user could not write on the hub anyway) stays there. Written before web1's next report:
    # once that report is on the hub, the request would be too if the push carried it.
    web1.put(TlsCredential.create("local", ["local.example.com"], servers=["web1"]).to_doc())
    report = web1.get(ids.deploy_id("web1", "site"))
    report["state"] = "removed"
    web1.put(report)
    assert wait_for(lambda: hub.get(ids.deploy_id("web1", "site")).get("state") == "removed", 20)
    assert not on(hub, ids.credential_id("local"))
    jobs = CouchClient(node.admin_url).db(replication.REPLICATOR_DB).all_docs(include_docs=True)["rows"]
    ours = [row["doc"] for row in jobs if "certstore" in row["doc"]]
    assert ours and all(doc["checkpoint_interval"] == replication.CHECKPOINT_INTERVAL_MS for doc in ours), (
        "pouchdb-server would write a checkpoint after every replicated change"
    )


def test_push_all_sends_what_the_certmgr_or_admins_write_on_the_replica(
    couch_servers: Any, db_name: str
) -> None:
    hub_server, node = couch_servers(2)
    hub_db = hub_server.db_name(db_name)
    init_database(CouchClient(hub_server.admin_url), hub_db)
    hub = CouchClient(hub_server.admin_url).db(hub_db)
    certmgr = replica(hub_server, hub_db, node, node.db_name(db_name + "-cm"), "cm", push_all=True)
    certmgr.put(TlsCredential.create("written-there", ["there.example.com"]).to_doc())
    assert wait_for(lambda: hub.get_or_none(ids.credential_id("written-there")) is not None, 20)
    push = (
        CouchClient(node.admin_url)
        .db(replication.REPLICATOR_DB)
        .get(replication_doc_id(replication_name("cm"), "push"))
    )
    assert "filter" not in push


def test_a_replica_without_the_filters_is_refused_with_the_fix(couch_servers: Any, db_name: str) -> None:
    hub_server, node = couch_servers(2)
    bare = node.db_name(db_name + "-bare")
    client = CouchClient(node.admin_url)
    client.db(bare).create()  # no `certstore init`: no design document, so no filters
    with pytest.raises(CertstoreError, match="run `certstore init` on the replica first"):
        replication.add(
            client,
            replication.Endpoint(hub_server.admin_url, hub_server.db_name(db_name)),
            replication.Endpoint(node.admin_url, bare),
            name="bare",
            server="bare",
        )
    assert (
        client.db(replication.REPLICATOR_DB).get_or_none(replication_doc_id(replication_name("bare"), "pull"))
        is None
    )


def test_filtered_longpoll_feeds_each_get_their_own_change_after_many_others(
    couch_server: Any, db_name: str
) -> None:
    """What the pouchdb-utils patch changes: live listeners of one database share a read of the new
    rows, and a filtered feed resumes after every row it read, matched or not. Each feed must still
    get exactly its own server's documents, however many unmatched writes came first."""
    name = couch_server.db_name(db_name)
    client = CouchClient(couch_server.admin_url)
    init_database(client, name)
    db = client.db(name)
    since = db.info()["update_seq"]
    servers = [f"web{i}" for i in range(4)]
    got: dict[str, list[str]] = {server: [] for server in servers}

    def follow(server: str) -> None:
        position: Any = since
        with httpx.Client(auth=couch_server.auth, timeout=60) as http:
            while len(got[server]) < 2:
                reply = http.get(
                    f"{couch_server.url}/{name}/_changes",
                    params={
                        "feed": "longpoll",
                        "since": position,
                        "heartbeat": 10000,
                        "filter": replication.REPLICA_FILTER,
                        "server": server,
                    },
                    headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                ).json()
                got[server].extend(row["id"] for row in reply["results"])
                position = reply["last_seq"]

    threads = [threading.Thread(target=follow, args=(server,), daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    for round_no in range(2):
        for i in range(20):  # reports of servers nobody follows: every feed wakes, none matches
            db.put(Deployment(server=f"other{i}", credential=f"c{round_no}").to_doc())
        for server in servers:
            db.put(Deployment(server=server, credential=f"c{round_no}").to_doc())
    for thread in threads:
        thread.join(30)
    for server in servers:
        assert got[server] == [ids.deploy_id(server, "c0"), ids.deploy_id(server, "c1")], server
