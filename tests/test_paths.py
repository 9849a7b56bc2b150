"""Every path the agent writes is built in agent/paths.py: hostile names refused, good ones kept inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import UnsafePath
from agent.paths import KEYRING_FILES, AgentPaths, check_component, check_keyfile, check_serial, check_token

HOSTILE = [
    "",
    ".",
    "..",
    "../etc",
    "../../etc/passwd",
    "a/../b",
    "a/b",
    "/etc/passwd",
    "/",
    "a\\b",
    "a\x00b",
    "\x00",
    "*.example.com",
    "*",
    ".hidden",
    "-rf",
    "a" * 65,
    "x" * 5000,
    "bücher",
    "сертификат",
    "web\u202e1",
    "a b",
    "a\nb",
    "..a",
    "a..",
    "a..b",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_keyfile_names_are_refused(value: str) -> None:
    with pytest.raises(UnsafePath):
        check_keyfile(value)


@pytest.mark.parametrize("value", [None, 3, b"web", ["web"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(UnsafePath):
        check_component(value)


@pytest.mark.parametrize("value", ["web", "www.example.com", "site_1", "A-b.c", "a" * 64, "0"])
def test_good_keyfile_names_are_kept(value: str, tmp_path: Path) -> None:
    assert check_keyfile(value) == value
    paths = AgentPaths.create(tmp_path / "data", tmp_path / "state")
    for built in (paths.versions_dir(value), paths.live_link(value), paths.version_dir(value, "1f", "abcd")):
        assert built.parent.parent == paths.data_dir or built.parent.parent.parent == paths.data_dir
        assert ".." not in built.parts


@pytest.mark.parametrize("value", HOSTILE)
def test_every_builder_refuses_hostile_keyfiles(value: str, tmp_path: Path) -> None:
    paths = AgentPaths.create(tmp_path / "data", tmp_path / "state")
    for build in (
        lambda: paths.versions_dir(value),
        lambda: paths.live_link(value),
        lambda: paths.version_dir(value, "1f", "abcd"),
        lambda: paths.temp_version_dir(value, "1f", "abcd"),
        lambda: paths.temp_live_link(value, "abcd"),
        lambda: paths.live_paths(value),
    ):
        with pytest.raises(UnsafePath):
            build()


@pytest.mark.parametrize("serial", ["", "../1", "1/2", "ABC", "g1", "1" * 41, "1\x00", "١٢"])
def test_bad_serials_are_refused(serial: str) -> None:
    with pytest.raises(UnsafePath):
        check_serial(serial)


@pytest.mark.parametrize("token", ["", "abc", "../abcd", "ABCD", "a" * 33])
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(UnsafePath):
        check_token(token)


def test_live_files_and_link_target(tmp_path: Path) -> None:
    paths = AgentPaths.create(tmp_path / "data", tmp_path / "state")
    assert paths.live_file("web", "fullchain.pem") == tmp_path / "data" / "live" / "web" / "fullchain.pem"
    assert [Path(p).name for p in paths.live_paths("web")] == list(KEYRING_FILES)
    with pytest.raises(UnsafePath):
        paths.live_file("web", "../../etc/shadow")
    version = paths.version_dir("web", "1f", "abcd")
    assert paths.link_target("web", version) == "../versions/web/1f-abcd"
    with pytest.raises(UnsafePath):
        paths.link_target("other", version)
    with pytest.raises(UnsafePath):
        paths.link_target("web", tmp_path / "elsewhere" / "1f-abcd")
    assert paths.checkpoint_file.parent == paths.status_file.parent == tmp_path / "state"


def test_the_agent_checks_a_keyfile_that_bypassed_the_document_model(tmp_path: Path) -> None:
    """A request model built without validation (as a replica without the design doc could hold)."""
    from agent_ca import TestCA, state_doc

    from agent.config import AgentConfig
    from agent.hostagent import HostAgent
    from store.couch import CouchClient
    from store.documents import TlsCredential, TlsCredentialState
    from store.hostkey import generate_host_key

    key = generate_host_key(tmp_path / "state")
    issued = TestCA().issue(["www.example.com"])
    config = AgentConfig(
        server="web1",
        url="http://127.0.0.1:9",
        db="certstore",
        state_dir=tmp_path / "state",
        data_dir=tmp_path / "data",
    )
    # Nothing is sent to this database: the checks fail before any report is written.
    agent = HostAgent(config, CouchClient("http://127.0.0.1:9").db("certstore"), host_keys=[key])
    for hostile in ("../../etc", "a/b", "x\x00", "*.example.com"):
        agent._requests["site"] = TlsCredential(
            name="site", hostnames=["www.example.com"], servers=["web1"], keyfile=hostile
        )
        agent._states["site"] = TlsCredentialState.from_doc(
            state_doc("site", issued, {"web1": key.public_key})
        )
        agent.reconcile("site")
        report = agent._reports["site"]
        assert report.state == "failed" and report.error is not None and "keyfile" in report.error
    assert not (tmp_path / "data").exists() and not (tmp_path / "etc").exists()
