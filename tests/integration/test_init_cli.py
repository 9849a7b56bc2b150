"""`certstore init`, replication and the CLI's error handling, against a real server."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest

from store import ids
from store.couch import CouchClient
from store.design import load_design_doc
from store.errors import Unauthorized
from store.follower import wait_for
from store.localservices import free_port

pytestmark = pytest.mark.integration


def certstore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("certstore: error:"), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]


def test_init_creates_everything_and_is_idempotent(couch_server: Any, db_name: str) -> None:
    first = certstore("init", "--url", couch_server.admin_url, "--db", db_name)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout and "installed" in first.stdout
    assert couch_server.admin_password not in first.stdout

    client = CouchClient(couch_server.admin_url)
    db = client.db(db_name)
    design = db.get(ids.DESIGN)
    assert design["certstore_version"] == load_design_doc()["certstore_version"]
    assert "validate_doc_update" in design
    security = db.get_security()
    assert "certstore-server" in security["members"]["roles"]
    assert "certstore-admin" in security["admins"]["roles"]
    assert db.get(ids.SETTINGS)["type"] == "settings"

    second = certstore("init", "--url", couch_server.admin_url, "--db", db_name)
    assert second.returncode == 0, second.stderr
    assert "exists" in second.stdout
    assert db.get(ids.DESIGN)["_rev"] == design["_rev"], "an unchanged design doc was rewritten"


def test_anonymous_access_is_refused_after_init(couch_server: Any, db_name: str) -> None:
    assert certstore("init", "--url", couch_server.admin_url, "--db", db_name).returncode == 0
    anonymous = CouchClient(couch_server.url, backoff=())
    with pytest.raises(Unauthorized):
        anonymous.db(db_name).get(ids.SETTINGS)
    with pytest.raises(Unauthorized):
        anonymous.db(db_name).put({"_id": "settings", "type": "settings"})


def test_server_user_is_created_once_and_can_enroll(couch_server: Any, db_name: str, tmp_path: Any) -> None:
    assert certstore("init", "--url", couch_server.admin_url, "--db", db_name).returncode == 0
    made = certstore("server", "add-user", "web1", "--url", couch_server.admin_url)
    if made.returncode != 0 and "already exists" in made.stderr:
        made = certstore("server", "add-user", "web1", "--url", couch_server.admin_url, "--reset-password")
    assert made.returncode == 0, made.stderr
    lines = [line for line in made.stdout.splitlines() if line.startswith(("user", "password"))]
    fields = dict(line.split(":", 1) for line in lines)
    user, password = fields["user"].strip(), fields["password"].strip()
    again = certstore("server", "add-user", "web1", "--url", couch_server.admin_url)
    assert_one_line_error(again, "already exists", "--reset-password")

    host_url = couch_server.url.replace("://", f"://{user}:{password}@")
    enrolled = certstore("server", "enroll", "web1", "--url", host_url, "--db", db_name,
                         "--state-dir", str(tmp_path / "web1"))
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled server web1" in enrolled.stdout
    # The server's user may not write another server's document: the design doc says why.
    other = certstore("server", "enroll", "web2", "--url", host_url, "--db", db_name,
                      "--state-dir", str(tmp_path / "web2"))
    assert_one_line_error(other, "server:web2")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("closed-port", "cannot reach CouchDB"),
        ("not-a-url", "not a CouchDB URL"),
        ("bad-password", "401"),
        ("missing-db", "404"),
    ],
)
def test_bad_input_gives_one_line_and_non_zero_exit(
    couch_server: Any, db_name: str, tmp_path: Any, case: str, expected: str
) -> None:
    urls = {
        "closed-port": f"http://admin:pw@127.0.0.1:{free_port()}",
        "not-a-url": "localhost-no-scheme",
        "bad-password": couch_server.url.replace("://", "://admin:wrong-password@"),
        "missing-db": couch_server.admin_url,
    }
    if case == "missing-db":
        result = certstore("server", "enroll", "web1", "--url", urls[case], "--db", db_name,
                           "--state-dir", str(tmp_path))
    else:
        result = certstore("init", "--url", urls[case], "--db", db_name)
    assert_one_line_error(result, expected)
    assert "wrong-password" not in result.stderr


def test_replicate_add_list_remove(couch_servers: Any, db_name: str) -> None:
    hub, node = couch_servers(2)
    hub_db, node_db = hub.db_name(db_name), node.db_name(db_name)
    for server, name in ((hub, hub_db), (node, node_db)):
        assert certstore("init", "--url", server.admin_url, "--db", name).returncode == 0
    added = certstore("replicate", "add", "--hub", hub.admin_url, "--replica", node.admin_url,
                      "--hub-db", hub_db, "--replica-db", node_db, "--name", "web1")
    assert added.returncode == 0, added.stderr
    assert hub.admin_password not in added.stdout or hub.admin_password == ""

    hub_client, node_client = CouchClient(hub.admin_url), CouchClient(node.admin_url)
    hub_client.db(hub_db).put({"_id": "server:from-hub", "type": "server"})
    node_client.db(node_db).put({"_id": "server:from-node", "type": "server"})
    assert wait_for(lambda: node_client.db(node_db).get_or_none("server:from-hub") is not None, 20)
    assert wait_for(lambda: hub_client.db(hub_db).get_or_none("server:from-node") is not None, 20)

    listed = certstore("replicate", "list", "--url", node.admin_url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert "web1" in listed.stdout and "pull" in listed.stdout and "push" in listed.stdout
    assert node.admin_password not in listed.stdout

    again = certstore("replicate", "add", "--hub", hub.admin_url, "--replica", node.admin_url,
                      "--hub-db", hub_db, "--replica-db", node_db, "--name", "web1")
    assert again.returncode == 0, again.stderr
    removed = certstore("replicate", "remove", "--url", node.admin_url, "web1")
    assert removed.returncode == 0, removed.stderr
    assert httpx.get(node.url + "/", timeout=5).status_code == 200, "the server died on remove"
    missing = certstore("replicate", "remove", "--url", node.admin_url, "web1")
    assert_one_line_error(missing, "no replication named")
