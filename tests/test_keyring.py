"""Keyring versions: complete sets, atomic switch, rollback, pruning, and a crash injected at every step."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from agent_ca import Issued, TestCA
from cryptography.hazmat.primitives.serialization import pkcs12

from agent.keyring import FileOwner, KeyMaterial, Keyring, read_meta, version_problems
from agent.keys import certificate_info, key_matches_certificate, split_chain
from agent.paths import KEYRING_FILES, SECRET_FILES, AgentPaths


class Crash(Exception):
    """Stands for the process dying at a given step."""


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def material(issued: Issued, name: str = "site") -> KeyMaterial:
    info = certificate_info(issued.chain[0])
    return KeyMaterial(
        name,
        issued.key_pem,
        issued.chain,
        info.serial_hex,
        info.names,
        info.not_after,
        info.fingerprint_sha256,
    )


def keyring(tmp_path: Path, **kwargs: object) -> Keyring:
    return Keyring(AgentPaths.create(tmp_path / "data", tmp_path / "state"), **kwargs)  # type: ignore[arg-type]


def assert_consistent(ring: Keyring, keyfile: str) -> str:
    """The live set is complete and consistent; returns its fingerprint."""
    live = ring.paths.live_link(keyfile)
    files = {name: (live / name).read_bytes() for name in KEYRING_FILES}
    assert files["fullchain.pem"] == files["cert.pem"] + files["chain.pem"]
    assert files["combined.pem"] == files["privkey.pem"] + files["fullchain.pem"]
    assert key_matches_certificate(files["privkey.pem"], files["cert.pem"])
    assert ring.live_problems(keyfile) == []
    meta = read_meta(live)
    assert meta is not None
    assert meta["fingerprint_sha256"] == certificate_info(files["cert.pem"]).fingerprint_sha256
    return str(meta["fingerprint_sha256"])


def test_install_writes_every_file_with_modes(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path, p12_password=b"s3cret")
    issued = ca.issue(["www.example.com", "example.com"])
    version, previous = ring.install("site", material(issued))
    assert previous is None
    assert assert_consistent(ring, "site") == issued.fingerprint
    for name in KEYRING_FILES:
        mode = stat.S_IMODE(os.stat(version / name).st_mode)
        assert mode == (0o600 if name in SECRET_FILES else 0o644), name
    assert split_chain((version / "fullchain.pem").read_bytes()) == list(issued.chain)
    key, cert, extra = pkcs12.load_key_and_certificates((version / "keyring.p12").read_bytes(), b"s3cret")
    assert key is not None and cert is not None and len(extra) == 1
    meta = read_meta(version)
    assert meta is not None and meta["names"] == ["www.example.com", "example.com"]
    assert os.readlink(ring.paths.live_link("site")) == f"../versions/site/{version.name}"
    # No secret in meta.json, and the version holds only the keyring files.
    assert b"PRIVATE KEY" not in (version / "meta.json").read_bytes()
    assert sorted(os.listdir(version)) == sorted(KEYRING_FILES)


def test_p12_without_password(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    version, _ = ring.install("site", material(ca.issue(["a.example.com"])))
    key, cert, _ = pkcs12.load_key_and_certificates((version / "keyring.p12").read_bytes(), None)
    assert key is not None and cert is not None


def test_switch_rollback_and_prune(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path, keep_versions=2)
    first, _ = ring.install("site", material(ca.issue(["a.example.com"])))
    second_issued = ca.issue(["a.example.com"])
    second, previous = ring.install("site", material(second_issued))
    assert previous == first
    ring.rollback("site", second, previous)
    assert ring.current("site") == first and not second.exists()
    for _ in range(3):
        ring.install("site", material(ca.issue(["a.example.com"])))
    ring.prune("site")
    kept = ring.versions("site")
    assert len(kept) == 2 and ring.current("site") in kept
    ring.remove("site")
    assert ring.current("site") is None and not ring.paths.versions_dir("site").exists()


def test_rollback_without_previous_removes_the_link(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    version, previous = ring.install("site", material(ca.issue(["a.example.com"])))
    ring.rollback("site", version, previous)
    assert ring.current("site") is None and ring.live_keyfiles() == []


STEPS = [f"write:{name}" for name in KEYRING_FILES] + [
    "rename-version",
    "symlink",
    "replace-link",
    "fsync-live",
]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_leaves_the_old_or_the_new_set(ca: TestCA, tmp_path: Path, step: str) -> None:
    old = ca.issue(["a.example.com"])
    new = ca.issue(["a.example.com"])
    keyring(tmp_path).install("site", material(old))

    def fault(at: str) -> None:
        if at == step:
            raise Crash(at)

    with pytest.raises(Crash):
        keyring(tmp_path, fault=fault).install("site", material(new))
    # The "restarted" agent sees a complete set, then cleans what the crash left.
    ring = keyring(tmp_path)
    seen = assert_consistent(ring, "site")
    assert seen == (new.fingerprint if step == "fsync-live" else old.fingerprint)
    ring.clean_partial()
    assert not [p for p in ring.paths.live_root.iterdir() if p.name.startswith(".")]
    assert not [p for p in ring.paths.versions_dir("site").iterdir() if p.name.startswith(".")]
    assert_consistent(ring, "site")


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_on_the_first_install_leaves_nothing_live(ca: TestCA, tmp_path: Path, step: str) -> None:
    def fault(at: str) -> None:
        if at == step:
            raise Crash(at)

    with pytest.raises(Crash):
        keyring(tmp_path, fault=fault).install("site", material(ca.issue(["a.example.com"])))
    ring = keyring(tmp_path)
    if step == "fsync-live":
        assert_consistent(ring, "site")
    else:
        assert ring.current("site") is None


def test_problems_find_changed_and_deleted_files(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    version, _ = ring.install("site", material(ca.issue(["a.example.com"])))
    meta = read_meta(version)
    assert version_problems(version, meta) == []
    (version / "cert.pem").write_bytes(b"changed")
    (version / "privkey.pem").unlink()
    assert sorted(version_problems(version, meta)) == ["cert.pem was changed", "privkey.pem is missing"]
    (version / "meta.json").write_text('{"files": {}}')
    assert version_problems(version, meta) == ["meta.json was changed"]
    os.unlink(ring.paths.live_link("site"))
    assert ring.live_problems("site") != []


def test_a_link_pointing_elsewhere_is_not_trusted(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    ring.install("site", material(ca.issue(["a.example.com"])))
    link = ring.paths.live_link("site")
    os.unlink(link)
    os.symlink("/etc", link)
    assert ring.current("site") is None and ring.live_problems("site") != []


def test_chown_only_as_root(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path, owner=FileOwner(uid=os.getuid(), gid=os.getgid()))
    version, _ = ring.install("site", material(ca.issue(["a.example.com"])))
    assert os.stat(version / "privkey.pem").st_uid == os.getuid()


def test_a_link_in_another_form_still_resolves(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    version, _ = ring.install("site", material(ca.issue(["a.example.com"])))
    link = ring.paths.live_link("site")
    os.unlink(link)
    os.symlink(version, link)  # absolute, as an admin might make it by hand
    assert ring.current("site") == version and ring.live_problems("site") == []


BATCH = ["one", "two", "three"]


def test_a_committed_batch_is_live_with_each_previous_version(ca: TestCA, tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    first, _ = ring.install("one", material(ca.issue(["a.example.com"])))
    issued = {name: ca.issue([f"{name}.example.com"]) for name in BATCH}
    staged = [ring.stage(name, material(issued[name], name)) for name in BATCH]
    assert ring.live_keyfiles() == ["one"] and ring.current("one") == first  # nothing switched yet
    results = ring.commit(staged)
    assert results == [(s.final, first if s.keyfile == "one" else None) for s in staged]
    for name in BATCH:
        assert assert_consistent(ring, name) == issued[name].fingerprint
        assert read_meta(ring.paths.live_link(name)) == staged[BATCH.index(name)].meta


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_of_a_batch_leaves_each_keyfile_old_or_new(
    ca: TestCA, tmp_path: Path, step: str
) -> None:
    old = {name: ca.issue([f"{name}.example.com"]) for name in BATCH}
    new = {name: ca.issue([f"{name}.example.com"]) for name in BATCH}
    ring = keyring(tmp_path)
    for name in BATCH:
        ring.install(name, material(old[name], name))
    calls = 0

    def fault(at: str) -> None:
        nonlocal calls
        if at == step:
            calls += 1
            if calls == 2:  # the second keyfile's step: the first one got past it
                raise Crash(at)

    faulty = keyring(tmp_path, fault=fault)
    with pytest.raises(Crash):
        staged = [faulty.stage(name, material(new[name], name)) for name in BATCH]
        faulty.commit(staged)
        raise Crash("fsync-live is reached once per batch")  # it has no second call
    ring = keyring(tmp_path)
    seen = {name: assert_consistent(ring, name) for name in BATCH}
    for name in BATCH:
        assert seen[name] in (old[name].fingerprint, new[name].fingerprint)
    if step in ("symlink", "replace-link"):
        # Only the switch had begun: the first keyfile is on its new set, the others on their old.
        assert seen["one"] == new["one"].fingerprint
        assert [seen[n] for n in BATCH[1:]] == [old[n].fingerprint for n in BATCH[1:]]
    elif step == "fsync-live":
        assert seen == {name: new[name].fingerprint for name in BATCH}
    else:
        assert seen == {name: old[name].fingerprint for name in BATCH}
    ring.clean_partial()
    for name in BATCH:
        assert not [p for p in ring.paths.versions_dir(name).iterdir() if p.name.startswith(".")]
        assert_consistent(ring, name)
