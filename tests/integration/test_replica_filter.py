"""A server's replica holds what that server needs: not the other servers' heartbeats and reports."""

from __future__ import annotations

from typing import Any

import pytest

from store import ids, replication
from store.couch import CouchClient, Database
from store.documents import Deployment, Server, TlsCredential
from store.follower import wait_for
from store.provision import init_database

pytestmark = pytest.mark.integration


def replica(hub: Any, hub_db: str, server: Any, db_name: str, name: str) -> Database:
    client = CouchClient(server.admin_url)
    init_database(client, db_name)
    replication.add(
        client,
        replication.Endpoint(hub.admin_url, hub_db),
        replication.Endpoint(server.admin_url, db_name),
        name=name,
        server=name,
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
