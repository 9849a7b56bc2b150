"""The local services for real: CouchDB nodes, restarts, dev up/status/down, pebble, BIND, the patch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.update
import httpx
import pytest
from cryptography import x509

from store import localservices
from store.follower import wait_for
from store.localservices import BindServer, ChallTestSrv, Pebble

pytestmark = pytest.mark.integration

# The fixtures' CouchServer (tests/conftest.py): url, admin_url, auth, db_name(), db_url(), restart()...
CouchServer = Any

JSON = {"Accept": "application/json", "Content-Type": "application/json"}


def request(server: CouchServer, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
    """An admin request to ``server`` (JSON in and out, as pouchdb-server needs)."""
    return httpx.request(
        method,
        server.url + path,
        auth=server.auth,
        headers=JSON,
        json=body,
        params=params or None,
        timeout=10,
    )


def ok(response: httpx.Response) -> Any:
    assert response.is_success, (
        response.request.method,
        response.request.url,
        response.status_code,
        response.text,
    )
    return response.json()


@pytest.fixture
def unrelated_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process nobody should kill: the tests check that it survives our shutdowns."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# --- CouchDB nodes ---------------------------------------------------------------------------------


def test_two_nodes_require_auth_for_admin_operations(
    couch_servers: Callable[[int], list[CouchServer]],
) -> None:
    for server in couch_servers(2):
        assert "version" in ok(httpx.get(server.url + "/", headers=JSON))
        session = ok(request(server, "GET", "/_session"))
        assert "_admin" in session["userCtx"]["roles"]
        anonymous = httpx.get(server.url + "/_session", headers=JSON).json()
        assert "_admin" not in anonymous["userCtx"]["roles"]
        # Admin-only operations refused without credentials and with a wrong password. (An anonymous
        # PUT /db would crash pouchdb-server, see DESIGN.md, so the probe is the config API.)
        refused = httpx.get(server.url + "/_config", headers=JSON)
        assert refused.status_code == 401
        wrong = httpx.get(server.url + "/_config", headers=JSON, auth=(server.admin_user, "wrong"))
        assert wrong.status_code == 401
        assert ok(request(server, "GET", "/_all_dbs")) is not None


def test_admin_url_carries_quoted_credentials(couch_server: CouchServer) -> None:
    response = httpx.get(couch_server.admin_url + "/_session", headers=JSON)
    assert "_admin" in ok(response)["userCtx"]["roles"]


def test_restart_keeps_data_and_port(couch_server: CouchServer, db_name: str) -> None:
    if not couch_server.restartable:
        pytest.skip("needs a pouchdb-server started by the tests")
    db = couch_server.db_name(db_name)
    ok(request(couch_server, "PUT", f"/{db}"))
    rev = ok(request(couch_server, "PUT", f"/{db}/kept", {"value": 42}))["rev"]
    url, pid = couch_server.url, couch_server.node.pid

    couch_server.restart()

    assert couch_server.url == url and couch_server.node.pid != pid
    doc = ok(request(couch_server, "GET", f"/{db}/kept"))
    assert (doc["_rev"], doc["value"]) == (rev, 42)
    assert "_admin" in ok(request(couch_server, "GET", "/_session"))["userCtx"]["roles"]


def test_stop_then_start(couch_server: CouchServer) -> None:
    if not couch_server.restartable:
        pytest.skip("needs a pouchdb-server started by the tests")
    couch_server.stop()
    assert not couch_server.alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(couch_server.url + "/")
    couch_server.start()
    assert couch_server.alive()
    ok(httpx.get(couch_server.url + "/", headers=JSON))


# --- the pouchdb-validation patch ------------------------------------------------------------------

VALIDATE = """function (newDoc, oldDoc, userCtx, secObj) {
  if (!newDoc._deleted && typeof newDoc.type !== 'string') { throw({forbidden: 'type is required'}); }
}"""


def revision_tree(server: CouchServer, db: str, doc_id: str) -> dict[str, Any]:
    """Every leaf revision with its full history, and the conflicts CouchDB reports for the winner."""
    leaves = ok(request(server, "GET", f"/{db}/{doc_id}", open_revs="all", revs="true"))
    tree = {
        entry["ok"]["_rev"]: (entry["ok"]["_revisions"]["start"], entry["ok"]["_revisions"]["ids"])
        for entry in leaves
    }
    winner = ok(request(server, "GET", f"/{db}/{doc_id}", conflicts="true"))
    return {"leaves": tree, "winner": winner["_rev"], "conflicts": sorted(winner.get("_conflicts", []))}


def replicate(target_server: CouchServer, source_url: str, target_url: str) -> None:
    result = ok(request(target_server, "POST", "/_replicate", {"source": source_url, "target": target_url}))
    assert result["ok"] is True


def test_replication_into_a_validated_database_keeps_every_revision_and_conflict(
    couch_servers: Callable[[int], list[CouchServer]], db_name: str
) -> None:
    """Unpatched pouchdb-validation drops replicated updates and conflicts while reporting success."""
    source_server, target_server = couch_servers(2)
    source, target = source_server.db_name(db_name), target_server.db_name(db_name)
    ok(request(source_server, "PUT", f"/{source}"))
    ok(request(target_server, "PUT", f"/{target}"))
    ok(request(target_server, "PUT", f"/{target}/_design/rules", {"validate_doc_update": VALIDATE}))
    # The validation function runs: an invalid document is refused on the target.
    assert request(target_server, "PUT", f"/{target}/bad", {"no": "type"}).status_code == 403

    rev1 = ok(request(source_server, "PUT", f"/{source}/plain", {"type": "t", "n": 1}))["rev"]
    conflicting = [
        {"_id": "split", "_rev": "1-aaaa", "type": "t", "side": "a"},
        {"_id": "split", "_rev": "1-bbbb", "type": "t", "side": "b"},
        {"_id": "split", "_rev": "2-cccc", "_revisions": {"start": 2, "ids": ["cccc", "aaaa"]}, "type": "t"},
    ]
    ok(request(source_server, "POST", f"/{source}/_bulk_docs", {"docs": conflicting, "new_edits": False}))
    source_url, target_url = (
        source_server.db_url(db_name, admin=True),
        target_server.db_url(db_name, admin=True),
    )
    replicate(target_server, source_url, target_url)

    # A later update and a deeper conflicting branch must replicate onto what the target already has.
    ok(request(source_server, "PUT", f"/{source}/plain", {"type": "t", "n": 2, "_rev": rev1}))
    deeper = {"_id": "split", "_rev": "3-dddd", "_revisions": {"start": 3, "ids": ["dddd", "eeee", "bbbb"]}}
    ok(
        request(
            source_server,
            "POST",
            f"/{source}/_bulk_docs",
            {"docs": [{**deeper, "type": "t"}], "new_edits": False},
        )
    )
    replicate(target_server, source_url, target_url)

    for doc_id in ("plain", "split"):
        expected = revision_tree(source_server, source, doc_id)
        assert revision_tree(target_server, target, doc_id) == expected, doc_id
    split = revision_tree(target_server, target, "split")
    assert (split["winner"], split["conflicts"]) == ("3-dddd", ["2-cccc"])
    assert ok(request(target_server, "GET", f"/{target}/plain"))["n"] == 2


def test_continuous_replication_into_a_validated_database_keeps_conflicts(
    services_installed: None, tmp_path: Path
) -> None:
    """The same through a continuous ``_replicator`` job, as certstore's replicas run.

    On its own node: a running replication's ``_replicator`` doc must not be deleted on pouchdb-server
    (it crashes), so the job ends with the node.
    """
    if os.environ.get(localservices.TEST_COUCHDB_URL_ENV):
        pytest.skip("starts its own pouchdb-server")
    node = localservices.start_couch_node(tmp_path / "node")
    server = CouchServerLike(node)
    try:
        for db in ("src", "dst"):
            ok(request(server, "PUT", f"/{db}"))
        ok(request(server, "PUT", "/dst/_design/rules", {"validate_doc_update": VALIDATE}))
        job = {"source": node.db_url("src", admin=True), "target": node.db_url("dst", admin=True)}
        ok(request(server, "PUT", "/_replicator/src-to-dst", {**job, "continuous": True}))

        rev1 = ok(request(server, "PUT", "/src/doc", {"type": "t", "n": 1}))["rev"]
        ok(request(server, "PUT", "/src/doc", {"type": "t", "n": 2, "_rev": rev1}))
        branch = {
            "_id": "doc",
            "_rev": "2-ffff",
            "_revisions": {"start": 2, "ids": ["ffff", rev1.split("-")[1]]},
        }
        ok(
            request(
                server, "POST", "/src/_bulk_docs", {"docs": [{**branch, "type": "t"}], "new_edits": False}
            )
        )
        expected = revision_tree(server, "src", "doc")
        assert len(expected["leaves"]) == 2

        def arrived() -> bool:
            response = request(server, "GET", "/dst/doc", open_revs="all", revs="true")
            return response.status_code == 200 and revision_tree(server, "dst", "doc") == expected

        assert wait_for(arrived, timeout=10)
    finally:
        localservices.stop_service(node)


class CouchServerLike:
    """Just enough of the fixtures' CouchServer for ``request`` on a node started by the test."""

    def __init__(self, node: localservices.CouchNode) -> None:
        self.url = node.url
        self.auth = (node.admin_user, node.admin_password)


def test_every_installed_copy_of_a_patched_package_is_patched(couch_server: CouchServer) -> None:
    if not couch_server.restartable:
        pytest.skip("an external CouchDB is in use: pouchdb-server is not installed")
    copies = localservices.patched_copies()
    assert set(copies) == set(localservices.PATCHED_FILES)
    for package, paths in copies.items():
        assert paths, package
        for path in paths:
            assert "certstore patch" in path.read_text(), path


def run_node_script(couch_server: CouchServer, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with node among pouchdb-server's packages (skipped with an external CouchDB)."""
    if not couch_server.restartable:
        pytest.skip("an external CouchDB is in use: pouchdb-server is not installed")
    node = localservices.find_binary("node")
    assert node is not None
    return subprocess.run(
        [node, "-e", script],
        cwd=localservices.node_dir(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_pouchdb_fetch_fails_a_body_cut_off_by_a_closed_connection(couch_server: CouchServer) -> None:
    # What the node-fetch patch is for: unpatched, a long-poll whose server dies never ends, and
    # pouchdb-server's continuous replications never retry (tests/integration/test_hub_restart.py).
    started = time.monotonic()
    done = run_node_script(couch_server, localservices._CUT_BODY_CHECK)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 5.0


# What the pouchdb-fetch patch is for: the replicator's requests share kept-alive connections (node-fetch
# alone sends "Connection: close"), and an idle connection is closed before the server would close it.
_KEEP_ALIVE_CHECK = """
const http = require('http');
const {fetch} = require('pouchdb-fetch');
let connections = 0;
const server = http.createServer((req, res) => res.end('{"ok":true}'));
server.keepAliveTimeout = 2500;  // idle connections closed after 2.5 s (the hint says timeout=2)
server.on('connection', () => { connections += 1; });
server.listen(0, '127.0.0.1', async () => {
  const url = 'http://127.0.0.1:' + server.address().port + '/';
  try {
    for (let i = 0; i < 5; i++) { await (await fetch(url)).json(); }
    const first = connections;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    for (let i = 0; i < 3; i++) { await (await fetch(url)).json(); }
    console.log(JSON.stringify({first: first, total: connections}));
    process.exit(0);
  } catch (err) {
    console.error('fetch failed: ' + err);
    process.exit(1);
  }
});
"""


def test_pouchdb_fetch_keeps_connections_open(couch_server: CouchServer) -> None:
    done = run_node_script(couch_server, _KEEP_ALIVE_CHECK)
    assert done.returncode == 0, done.stderr
    # Five requests on one connection; after a pause longer than the server keeps an idle
    # connection, a new one for the next three.
    assert json.loads(done.stdout) == {"first": 1, "total": 2}


# --- what CouchDB keeps in memory (the pouchdb-adapter-leveldb-core, -validation, -security and -auth
# patches keep it until the next write that changes it): every change counts from the next request.


def as_user(server: CouchServer, user: str, password: str, method: str, path: str, body: Any = None) -> int:
    """The status of a request with basic authentication as ``user``."""
    return httpx.request(
        method, server.url + path, auth=(user, password), headers=JSON, json=body, timeout=10
    ).status_code


def put_user(server: CouchServer, name: str, password: str) -> str:
    """Create or update a user; the new revision."""
    doc_id = f"org.couchdb.user:{name}"
    current = request(server, "GET", f"/_users/{doc_id}")
    doc = {"_id": doc_id, "name": name, "password": password, "roles": [], "type": "user"}
    if current.status_code == 200:
        doc["_rev"] = current.json()["_rev"]
    return str(ok(request(server, "PUT", f"/_users/{doc_id}", doc))["rev"])


def test_a_changed_validation_function_applies_to_the_next_write(
    couch_server: CouchServer, db_name: str
) -> None:
    db = couch_server.db_name(db_name)
    ok(request(couch_server, "PUT", f"/{db}"))
    ok(request(couch_server, "PUT", f"/{db}/a", {"n": 1}))  # read and kept: no validation function yet
    rev = ok(request(couch_server, "PUT", f"/{db}/_design/rules", {"validate_doc_update": VALIDATE}))["rev"]
    assert request(couch_server, "PUT", f"/{db}/b", {"n": 2}).status_code == 403
    ok(request(couch_server, "PUT", f"/{db}/c", {"type": "t"}))
    ok(request(couch_server, "DELETE", f"/{db}/_design/rules", rev=rev))
    ok(request(couch_server, "PUT", f"/{db}/b", {"n": 2}))
    # Arriving by replication (a write of many documents at once) counts as well.
    rules = {"_id": "_design/rules", "_rev": "1-abcd", "validate_doc_update": VALIDATE}
    ok(request(couch_server, "POST", f"/{db}/_bulk_docs", {"docs": [rules], "new_edits": False}))
    assert request(couch_server, "PUT", f"/{db}/d", {"n": 3}).status_code == 403


def test_a_deleted_and_recreated_database_forgets_the_old_rules(
    couch_server: CouchServer, db_name: str
) -> None:
    db = couch_server.db_name(db_name)
    ok(request(couch_server, "PUT", f"/{db}"))
    ok(request(couch_server, "PUT", f"/{db}/_design/rules", {"validate_doc_update": VALIDATE}))
    ok(request(couch_server, "PUT", f"/{db}/_security", {"members": {"names": ["nobody"], "roles": []}}))
    assert request(couch_server, "PUT", f"/{db}/a", {"n": 1}).status_code == 403
    ok(request(couch_server, "DELETE", f"/{db}"))
    ok(request(couch_server, "PUT", f"/{db}"))
    ok(request(couch_server, "PUT", f"/{db}/a", {"n": 1}))
    assert ok(request(couch_server, "GET", f"/{db}/_security")).get("members", {}).get("names", []) == []


def test_a_changed_security_object_applies_to_the_next_request(
    couch_server: CouchServer, db_name: str
) -> None:
    db = couch_server.db_name(db_name)
    user, password = f"u-{db_name}", "pw-one"
    put_user(couch_server, user, password)
    ok(request(couch_server, "PUT", f"/{db}"))
    members = {"members": {"names": [user], "roles": []}}
    ok(request(couch_server, "PUT", f"/{db}/_security", members))
    assert as_user(couch_server, user, password, "PUT", f"/{db}/a", {"n": 1}) == 201
    # Stored as given: the sections filled in for the checks do not leak into what is read back.
    assert ok(request(couch_server, "GET", f"/{db}/_security")) == members
    ok(
        request(
            couch_server, "PUT", f"/{db}/_security", {"members": {"names": ["someone-else"], "roles": []}}
        )
    )
    # CouchDB says 403 to an authenticated non-member; pouchdb-server says 401 (DESIGN.md).
    assert as_user(couch_server, user, password, "GET", f"/{db}/a") in (401, 403)
    ok(request(couch_server, "PUT", f"/{db}/_security", members))
    assert as_user(couch_server, user, password, "GET", f"/{db}/a") == 200
    rev = ok(request(couch_server, "GET", f"/_users/org.couchdb.user:{user}"))["_rev"]
    ok(request(couch_server, "DELETE", f"/_users/org.couchdb.user:{user}", rev=rev))


def test_a_changed_user_applies_to_the_next_request(couch_server: CouchServer, db_name: str) -> None:
    user = f"u-{db_name}"
    # Unknown at first: refused, and that is remembered only until the users database changes.
    assert as_user(couch_server, user, "pw-one", "GET", "/_session") == 401
    put_user(couch_server, user, "pw-one")
    assert as_user(couch_server, user, "pw-one", "GET", "/_session") == 200
    put_user(couch_server, user, "pw-two")
    assert as_user(couch_server, user, "pw-one", "GET", "/_session") == 401
    assert as_user(couch_server, user, "pw-two", "GET", "/_session") == 200
    rev = ok(request(couch_server, "GET", f"/_users/org.couchdb.user:{user}"))["_rev"]
    ok(request(couch_server, "DELETE", f"/_users/org.couchdb.user:{user}", rev=rev))
    assert as_user(couch_server, user, "pw-two", "GET", "/_session") == 401


def test_responses_are_not_compressed(couch_server: CouchServer, db_name: str) -> None:
    # As Apache CouchDB: JSON goes out as is, even to a client that accepts gzip.
    db = couch_server.db_name(db_name)
    ok(request(couch_server, "PUT", f"/{db}"))
    ok(request(couch_server, "PUT", f"/{db}/big", {"data": "x" * 20000}))
    response = httpx.get(
        f"{couch_server.url}/{db}/big",
        auth=couch_server.auth,
        headers={"Accept-Encoding": "gzip"},
        timeout=10,
    )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.json()["data"] == "x" * 20000


def test_ensure_installed_is_fast_when_done(services_installed: None) -> None:
    started = time.monotonic()
    assert localservices.ensure_installed(npm=not os.environ.get(localservices.TEST_COUCHDB_URL_ENV)) == []
    assert time.monotonic() - started < 1.0


# --- dev up / status / down ------------------------------------------------------------------------


def test_dev_up_status_down_round_trip(
    services_installed: None, tmp_path: Path, unrelated_process: subprocess.Popen[bytes]
) -> None:
    if os.environ.get(localservices.TEST_COUCHDB_URL_ENV):
        pytest.skip("starts pouchdb-server nodes")
    state = localservices.dev_up(tmp_path, 2)
    try:
        assert [node.name for node in state.nodes] == ["node1", "node2"]
        assert all(state.alive.values()) and set(state.alive) == {"node1", "node2", "challtestsrv", "pebble"}
        assert json.loads((tmp_path / "state.json").read_text())["version"] == localservices.STATE_VERSION
        for node in state.nodes:
            ok(httpx.get(node.url + "/_session", auth=(node.admin_user, node.admin_password), headers=JSON))
        assert state.pebble is not None
        ok(httpx.get(state.pebble.directory_url, verify=state.pebble.ssl_context()))

        # Up again on a running dir: a no-op that reports the same processes.
        again = localservices.dev_up(tmp_path, 2)
        assert [n.pid for n in again.nodes] == [n.pid for n in state.nodes]
        assert again.pebble is not None and again.pebble.process == state.pebble.process

        # A dead node is seen by status and restarted by up, on its port and data dir.
        node1 = state.nodes[0]
        assert node1.pid is not None
        os.killpg(node1.pid, signal.SIGKILL)
        assert wait_for(lambda: not localservices.dev_status(tmp_path).alive["node1"], timeout=5)
        revived = localservices.dev_up(tmp_path, 2)
        assert (
            revived.alive["node1"] and revived.nodes[0].url == node1.url and revived.nodes[0].pid != node1.pid
        )

        # Asking for another HTTP-01 port restarts pebble on it; the nodes are untouched.
        port = localservices.free_port()
        moved = localservices.dev_up(tmp_path, 2, pebble_http_port=port)
        assert moved.pebble is not None and moved.pebble.http_port == port and moved.alive["pebble"]
        assert [n.pid for n in moved.nodes] == [n.pid for n in revived.nodes]
    finally:
        stopped = localservices.dev_down(tmp_path)
    assert stopped == ["pebble", "challtestsrv", "node2", "node1"]
    for node in revived.nodes:
        assert node.process is not None and not localservices.process_alive(node.process)
    assert unrelated_process.poll() is None
    assert localservices.dev_status(tmp_path).services() == {}
    assert localservices.dev_down(tmp_path) == []


def test_dev_down_never_kills_a_pid_it_did_not_start(
    tmp_path: Path, unrelated_process: subprocess.Popen[bytes]
) -> None:
    """A state file whose pid now belongs to another process (pid reuse) must not get that one killed."""
    impostor = localservices.ServiceProcess(
        pid=unrelated_process.pid, argv=("/usr/bin/node", "pouchdb-server"), log_file=tmp_path / "x.log"
    )
    node = localservices.CouchNode(
        name="node1", url="http://127.0.0.1:1", admin_user="a", admin_password="b", process=impostor
    )
    localservices.save_state(localservices.DevState(dir=tmp_path, nodes=(node,)))
    assert localservices.dev_status(tmp_path).alive == {"node1": False}
    assert localservices.dev_down(tmp_path) == []
    assert unrelated_process.poll() is None


def test_dev_up_with_an_external_couchdb_starts_no_node(couch_server: CouchServer, tmp_path: Path) -> None:
    state = localservices.dev_up(tmp_path, 2, couchdb_url=couch_server.admin_url)
    try:
        assert state.external_couchdb
        assert [node.url for node in state.nodes] == [couch_server.url] * 2
        assert [node.db_name("certstore") for node in state.nodes] == ["node1-certstore", "node2-certstore"]
        assert all(node.pid is None for node in state.nodes)
        assert state.alive["node1"] and state.alive["pebble"]
    finally:
        stopped = localservices.dev_down(tmp_path)
    assert stopped == ["pebble", "challtestsrv"]
    assert couch_server.alive()


# --- pebble ----------------------------------------------------------------------------------------


def test_pebble_serves_its_directory_and_root(pebble: Pebble) -> None:
    directory = ok(httpx.get(pebble.directory_url, verify=pebble.ssl_context()))
    assert {"newAccount", "newNonce", "newOrder"} <= set(directory)
    root = x509.load_pem_x509_certificate(pebble.root_pem().encode())
    intermediate = x509.load_pem_x509_certificate(pebble.intermediate_pem().encode())
    assert intermediate.issuer == root.subject


def test_pebble_factory_with_eab_and_a_given_http_port(
    pebble_factory: Callable[..., Pebble], pebble: Pebble
) -> None:
    port = localservices.free_port()
    eab_keys = {"kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}
    server = pebble_factory(eab_keys=eab_keys, http_port=port)
    assert server.http_port == port and server.directory_url != pebble.directory_url
    directory = ok(httpx.get(server.directory_url, verify=server.ssl_context()))
    assert directory["meta"]["externalAccountRequired"] is True
    config = json.loads((server.data_dir / "pebble-config.json").read_text())["pebble"]
    assert config["httpPort"] == port


def test_challtestsrv_resolves_names_and_serves_txt(challtestsrv: ChallTestSrv) -> None:
    host, port = challtestsrv.dns_address.split(":")
    answer = dns.query.udp(dns.message.make_query("anything.example.", "A"), host, port=int(port), timeout=2)
    assert [rr.address for rr in answer.answer[0]] == ["127.0.0.1"]
    challtestsrv.set_txt("_acme-challenge.anything.example", "token-value")
    answer = dns.query.udp(
        dns.message.make_query("_acme-challenge.anything.example.", "TXT"), host, port=int(port), timeout=2
    )
    assert [b"".join(rr.strings) for rr in answer.answer[0]] == [b"token-value"]
    challtestsrv.clear_txt("_acme-challenge.anything.example")


# --- BIND9 -----------------------------------------------------------------------------------------


def txt_values(server: BindServer, name: str) -> list[bytes]:
    answer = dns.query.udp(dns.message.make_query(name, "TXT"), server.host, port=server.port, timeout=2)
    return sorted(b"".join(rr.strings) for rrset in answer.answer for rr in rrset)


def test_bind_accepts_tsig_updates_with_two_txt_values(bind_server: Callable[..., BindServer]) -> None:
    server = bind_server(["example.com", "example.org"])
    name = "_acme-challenge.example.com."
    update = server.update_message("example.com")
    update.add("_acme-challenge", 60, "TXT", '"wildcard-token"')
    update.add("_acme-challenge", 60, "TXT", '"apex-token"')
    assert dns.query.tcp(update, server.host, port=server.port, timeout=5).rcode() == dns.rcode.NOERROR
    assert txt_values(server, name) == [b"apex-token", b"wildcard-token"]

    # Delete one value: the other stays.
    update = server.update_message("example.com")
    update.delete("_acme-challenge", "TXT", '"apex-token"')
    assert dns.query.tcp(update, server.host, port=server.port, timeout=5).rcode() == dns.rcode.NOERROR
    assert txt_values(server, name) == [b"wildcard-token"]


def test_bind_refuses_unsigned_and_wrongly_signed_updates(bind_server: Callable[..., BindServer]) -> None:
    server = bind_server(["example.net"])
    unsigned = dns.update.UpdateMessage("example.net.")
    unsigned.add("evil", 60, "TXT", '"x"')
    assert dns.query.tcp(unsigned, server.host, port=server.port, timeout=5).rcode() == dns.rcode.REFUSED
    wrong = replace(server, tsig_secret="d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCEhIQ==")
    signed_wrong = wrong.update_message("example.net")
    signed_wrong.add("evil", 60, "TXT", '"x"')
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.query.tcp(signed_wrong, server.host, port=server.port, timeout=5)
    assert txt_values(server, "evil.example.net.") == []
