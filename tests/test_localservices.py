"""Pure parts of store.localservices: configs, URLs, the state file, process identity, the dev CLI."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import dns.zone
import pytest
from typer.testing import CliRunner

from agent.cli_dev import dev_app
from store import localservices
from store.errors import ServiceError
from store.localservices import (
    BindServer,
    ChallTestSrv,
    CouchNode,
    DevState,
    Pebble,
    PebbleOptions,
    ServiceProcess,
)


def proc(pid: int = 4242, *argv: str) -> ServiceProcess:
    return ServiceProcess(pid=pid, argv=argv or ("/usr/bin/node", "x"), log_file=Path("/tmp/x.log"))


def sample_state(directory: Path) -> DevState:
    return DevState(
        dir=directory,
        nodes=(
            CouchNode("node1", "http://127.0.0.1:5001", "admin", "p@ss:/w", directory / "node1", proc(11)),
            CouchNode("node2", "http://127.0.0.1:5002", "admin", "pw", directory / "node2", proc(12)),
        ),
        pebble=Pebble(
            directory_url="https://127.0.0.1:14000/dir",
            ca_file=directory / "pebble" / "ca.pem",
            management_url="https://127.0.0.1:15000",
            http_port=5002,
            tls_port=5001,
            data_dir=directory / "pebble",
            process=proc(13, "/usr/bin/pebble", "-config", "c.json"),
            dns_server="127.0.0.1:8053",
            eab_keys={"kid-1": "secret"},
        ),
        challtestsrv=ChallTestSrv("127.0.0.1:8053", "http://127.0.0.1:8055", directory / "dns", proc(14)),
    )


# --- state file ------------------------------------------------------------------------------------


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = sample_state(tmp_path)
    path = localservices.save_state(state)
    assert path == tmp_path / "state.json"
    assert path.stat().st_mode & 0o777 == 0o600  # it holds admin passwords
    assert localservices.load_state(tmp_path) == state
    assert json.loads(path.read_text())["version"] == localservices.STATE_VERSION


def test_generic_json_round_trip_for_every_service() -> None:
    bind = BindServer("127.0.0.1", 53, ("example.com.",), "k.", "c2VjcmV0", Path("/d"), proc(5))
    for service in (bind, sample_state(Path("/s")).pebble, CouchNode("n", "http://h:1", "u", "p")):
        assert service is not None
        data = json.loads(json.dumps(localservices.to_json(service)))
        assert localservices.from_json(type(service), data) == service


def test_missing_state_is_none_and_status_empty(tmp_path: Path) -> None:
    assert localservices.load_state(tmp_path) is None
    status = localservices.dev_status(tmp_path)
    assert status.nodes == () and status.services() == {} and status.alive == {}


@pytest.mark.parametrize(
    "content", ["{not json", '{"version": 99, "dir": "/x", "nodes": []}', '{"version": 1}']
)
def test_bad_state_file_is_a_service_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(ServiceError):
        localservices.load_state(tmp_path)


def test_status_reports_dead_processes(tmp_path: Path) -> None:
    localservices.save_state(sample_state(tmp_path))
    status = localservices.dev_status(tmp_path)
    assert status.alive == {"node1": False, "node2": False, "challtestsrv": False, "pebble": False}


# --- URLs and external CouchDB -----------------------------------------------------------------------


def test_admin_url_quotes_credentials() -> None:
    node = CouchNode("n", "http://127.0.0.1:5984", "ad min", "p@ss:/w?#")
    assert node.admin_url == "http://ad%20min:p%40ss%3A%2Fw%3F%23@127.0.0.1:5984"
    assert localservices.split_credentials(node.admin_url) == ("http://127.0.0.1:5984", "ad min", "p@ss:/w?#")


def test_split_credentials_requires_them() -> None:
    with pytest.raises(ServiceError, match="credentials"):
        localservices.split_credentials("http://127.0.0.1:5984/")


def test_external_nodes_share_one_server_with_database_prefixes() -> None:
    (single,) = localservices.external_couch_nodes("http://admin:pw@127.0.0.1:5984/")
    assert (single.url, single.db_name("certstore"), single.external, single.pid) == (
        "http://127.0.0.1:5984",
        "certstore",
        True,
        None,
    )
    nodes = localservices.external_couch_nodes("http://admin:pw@127.0.0.1:5984", 2)
    assert [node.db_name("certstore") for node in nodes] == ["node1-certstore", "node2-certstore"]
    assert nodes[1].db_url("certstore") == "http://127.0.0.1:5984/node2-certstore"
    assert nodes[1].db_url("certstore", admin=True) == "http://admin:pw@127.0.0.1:5984/node2-certstore"


# --- configs -----------------------------------------------------------------------------------------


def test_pouchdb_config_sets_admin_and_log_and_keeps_the_rest(tmp_path: Path) -> None:
    existing = {"admins": {"old": "-pbkdf2-x"}, "couchdb": {"uuid": "u-1"}, "log": {"level": "debug"}}
    config = localservices.pouchdb_config(tmp_path, "admin", "pw", existing)
    assert config == {
        "admins": {"admin": "pw"},
        "couchdb": {"uuid": "u-1"},
        "log": {"level": "debug", "file": str(tmp_path / "log.txt")},
    }
    assert existing["admins"] == {"old": "-pbkdf2-x"}  # not mutated


def test_pebble_config_and_env() -> None:
    plain = localservices.pebble_config(
        port=1, management_port=2, cert_file=Path("/c"), key_file=Path("/k"), http_port=3, tls_port=4
    )["pebble"]
    assert plain["listenAddress"] == "127.0.0.1:1" and plain["managementListenAddress"] == "127.0.0.1:2"
    assert (plain["httpPort"], plain["tlsPort"], plain["externalAccountBindingRequired"]) == (3, 4, False)
    assert "externalAccountMACKeys" not in plain
    eab = localservices.pebble_config(
        port=1, management_port=2, cert_file=Path("/c"), key_file=Path("/k"), http_port=3, tls_port=4,
        eab_keys={"kid": "mac"},
    )["pebble"]  # fmt: skip
    assert eab["externalAccountBindingRequired"] is True and eab["externalAccountMACKeys"] == {"kid": "mac"}

    assert localservices.pebble_env(PebbleOptions()) == {"PEBBLE_VA_NOSLEEP": "1"}  # pebble's own chaos
    calm = localservices.pebble_env(PebbleOptions(nonce_reject_percent=0, authz_reuse_percent=0))
    assert calm == {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}


def test_zone_file_parses_with_soa_and_ns() -> None:
    zone = dns.zone.from_text(localservices.zone_file_text("example.com"), origin="example.com.")
    assert zone.get_rdataset("@", "SOA") is not None
    assert zone.get_rdataset("@", "NS") is not None


def test_named_conf_is_loopback_only_with_tsig_updates(tmp_path: Path) -> None:
    conf = localservices.named_conf_text(tmp_path, 5353, ["example.com.", "example.org"], "upd.", "c2VjcmV0")
    assert 'key "upd" { algorithm hmac-sha256; secret "c2VjcmV0"; };' in conf
    assert "listen-on port 5353 { 127.0.0.1; };" in conf and "listen-on-v6 { none; };" in conf
    assert conf.count('allow-update { key "upd"; };') == 2
    assert f'file "{tmp_path}/db.example.org";' in conf
    assert "recursion no;" in conf


def test_install_fingerprint_follows_lock_and_patches(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "package-lock.json").write_text("{}")
    first = localservices.install_fingerprint(tmp_path)
    (tmp_path / "patches" / "a+1.0.0.patch").write_text("diff")
    second = localservices.install_fingerprint(tmp_path)
    (tmp_path / "package-lock.json").write_text('{"x": 1}')
    assert len({first, second, localservices.install_fingerprint(tmp_path)}) == 3


def test_repository_patches_target_the_verified_packages() -> None:
    patches = {p.name: p.read_text() for p in (localservices.node_dir() / "patches").glob("*.patch")}
    assert sorted(name.split("+")[0] for name in patches) == sorted(localservices.PATCHED_FILES)
    for name, text in patches.items():
        package = name.split("+")[0]
        changed = sorted(line.split("/", 3)[3] for line in text.splitlines() if line.startswith("+++ b/"))
        assert changed == sorted(localservices.PATCHED_FILES[package]), name
        assert "certstore patch" in text, name
    assert "newDoc._revisions = incomingRevisions;" in patches["pouchdb-validation+4.2.0.patch"]
    assert "res.complete" in patches["node-fetch+2.6.7.patch"]
    assert "params.feed = 'continuous';" in patches["pouchdb-adapter-http+7.3.1.patch"]
    assert "feed.cancel();" in patches["express-pouchdb+4.2.0.patch"]
    assert localservices.EVERY_COPY <= set(localservices.PATCHED_FILES)


def _install_patched(modules: Path, marker: str = "// certstore patch\n") -> None:
    for package, files in localservices.PATCHED_FILES.items():
        for file in files:
            (modules / package / file).parent.mkdir(parents=True, exist_ok=True)
            (modules / package / file).write_text(marker)


def test_unpatched_copies_names_missing_packages_and_unmarked_files(tmp_path: Path) -> None:
    modules = tmp_path / "node_modules"
    _install_patched(modules)
    assert localservices._unpatched_copies(tmp_path) == []
    # A nested copy of a correctness patch's package must be patched too...
    nested = modules / "x" / "node_modules" / "pouchdb-validation" / "lib"
    nested.mkdir(parents=True)
    (nested / "index.js").write_text("unpatched\n")
    # ... a nested copy of a speed-up's package need not (pouchdb-utils under the websql adapters).
    utils = modules / "pouchdb-adapter-websql-core" / "node_modules" / "pouchdb-utils" / "lib"
    utils.mkdir(parents=True)
    (utils / "index.js").write_text("unpatched\n")
    (modules / "pouchdb-auth" / "lib" / "utils.js").write_text("unpatched\n")
    (modules / "node-fetch" / "lib" / "index.js").unlink()
    assert localservices._unpatched_copies(tmp_path) == [
        "node-fetch (not installed)",
        str(nested / "index.js"),
        str(modules / "pouchdb-auth" / "lib" / "utils.js"),
    ]
    _install_patched(modules)
    (nested / "index.js").write_text("// certstore patch\n")
    assert localservices._unpatched_copies(tmp_path) == []
    assert len(localservices.patched_copies(tmp_path)["pouchdb-validation"]) == 2


# --- process identity --------------------------------------------------------------------------------


def test_stop_process_leaves_a_reused_pid_alone() -> None:
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = ServiceProcess(
            pid=sleeper.pid, argv=("/usr/bin/pebble", "-config", "x"), log_file=Path("/x")
        )
        assert not localservices.process_alive(record)
        assert localservices.stop_process(record) is False
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stop_process_stops_what_it_started(tmp_path: Path) -> None:
    started = localservices._spawn(["sleep", "60"], cwd=tmp_path, log_file=tmp_path / "sleep.log")
    assert localservices.process_alive(started)
    assert localservices.stop_process(started) is True
    assert not localservices.process_alive(started)
    assert localservices.stop_process(started) is False


def test_free_port_is_bindable() -> None:
    port = localservices.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- the dev CLI ---------------------------------------------------------------------------------------


def test_dev_status_json_lists_urls_with_and_without_credentials(tmp_path: Path) -> None:
    localservices.save_state(sample_state(tmp_path))
    result = CliRunner().invoke(dev_app, ["status", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [n["url"] for n in data["nodes"]] == ["http://127.0.0.1:5001", "http://127.0.0.1:5002"]
    assert data["nodes"][0]["admin_url"] == "http://admin:p%40ss%3A%2Fw@127.0.0.1:5001"
    assert data["pebble"]["directory_url"] == "https://127.0.0.1:14000/dir"
    assert data["pebble"]["ca_file"] == str(tmp_path / "pebble" / "ca.pem")
    assert data["nodes"][0]["alive"] is False


def test_dev_status_and_down_on_an_empty_dir(tmp_path: Path) -> None:
    runner = CliRunner()
    assert "nothing is running" in runner.invoke(dev_app, ["status", "--dir", str(tmp_path)]).output
    assert "nothing was running" in runner.invoke(dev_app, ["down", "--dir", str(tmp_path)]).output
