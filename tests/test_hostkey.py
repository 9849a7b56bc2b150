"""Tests for store.hostkey: key ids, the 0600 key file, rotation backups, and public-key parsing."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from store.errors import InvalidPublicKey, KeyFileError, SealingError, ValidationError
from store.hostkey import (
    HostKey,
    generate_host_key,
    key_file_path,
    key_id,
    load_host_key,
    load_previous_keys,
    public_key_from_b64,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "certstore"


# --- key ids -----------------------------------------------------------------------------------


def test_key_id_is_stable_and_derived_from_the_public_key() -> None:
    public = PrivateKey(bytes(range(32))).public_key
    kid = key_id(public)
    assert kid == key_id(bytes(public))
    assert kid.startswith("x25519:")
    assert len(kid) == len("x25519:") + 32
    assert int(kid.removeprefix("x25519:"), 16) >= 0
    assert kid != key_id(PrivateKey.generate().public_key)


def test_key_id_refuses_a_wrong_length() -> None:
    with pytest.raises(InvalidPublicKey):
        key_id(b"short")


# --- generate / load ---------------------------------------------------------------------------


def test_generate_writes_0600_file_in_0700_dir_and_loads_back(state_dir: Path) -> None:
    generated = generate_host_key(state_dir)
    path = key_file_path(state_dir)
    assert mode(path) == 0o600
    assert mode(state_dir) == 0o700
    loaded = load_host_key(state_dir)
    assert loaded == generated
    assert bytes(loaded.private_key) == bytes(generated.private_key)
    assert loaded.public_key_b64 == generated.public_key_b64
    assert [p.name for p in state_dir.iterdir()] == ["hostkey.json"]  # no temp file left behind


def test_key_file_format(state_dir: Path) -> None:
    host_key = generate_host_key(state_dir)
    document = json.loads(key_file_path(state_dir).read_text())
    assert document["version"] == 1
    assert document["type"] == "x25519"
    assert document["key_id"] == host_key.key_id
    assert document["public_key"] == host_key.public_key_b64
    assert base64.b64decode(document["private_key"]) == bytes(host_key.private_key)


def test_generate_leaves_an_existing_dir_mode_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    generate_host_key(tmp_path)
    assert mode(tmp_path) == 0o750
    assert mode(key_file_path(tmp_path)) == 0o600


def test_generate_with_a_permissive_umask_still_writes_0600(state_dir: Path) -> None:
    old = os.umask(0)
    try:
        generate_host_key(state_dir)
    finally:
        os.umask(old)
    assert mode(key_file_path(state_dir)) == 0o600
    assert mode(state_dir) == 0o700


def test_generate_refuses_to_overwrite(state_dir: Path) -> None:
    first = generate_host_key(state_dir)
    with pytest.raises(KeyFileError, match="already exists"):
        generate_host_key(state_dir)
    assert load_host_key(state_dir) == first
    assert load_previous_keys(state_dir) == []
    assert [p.name for p in state_dir.iterdir()] == ["hostkey.json"]


def test_rotation_keeps_previous_keys_newest_first(state_dir: Path) -> None:
    first = generate_host_key(state_dir)
    second = generate_host_key(state_dir, overwrite=True)
    third = generate_host_key(state_dir, overwrite=True)
    assert len({first.key_id, second.key_id, third.key_id}) == 3
    assert load_host_key(state_dir) == third
    assert load_previous_keys(state_dir) == [second, first]
    for path in state_dir.iterdir():
        assert mode(path) == 0o600, path


def test_overwrite_without_an_existing_key_just_creates_one(state_dir: Path) -> None:
    host_key = generate_host_key(state_dir, overwrite=True)
    assert load_host_key(state_dir) == host_key
    assert load_previous_keys(state_dir) == []


def test_missing_key_tells_how_to_enroll(state_dir: Path) -> None:
    with pytest.raises(KeyFileError, match="certstore server enroll"):
        load_host_key(state_dir)


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_refuses_key_file_open_to_group_or_others(state_dir: Path, bad_mode: int) -> None:
    generate_host_key(state_dir)
    path = key_file_path(state_dir)
    path.chmod(bad_mode)
    with pytest.raises(KeyFileError) as info:
        load_host_key(state_dir)
    assert f"chmod 600 {path}" in str(info.value)
    assert f"{bad_mode:04o}" in str(info.value)


def test_refuses_a_directory_in_place_of_the_key(state_dir: Path) -> None:
    key_file_path(state_dir).mkdir(parents=True, mode=0o700)
    with pytest.raises(KeyFileError):
        load_host_key(state_dir)


def _write_key_file(state_dir: Path, content: str | bytes) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = key_file_path(state_dir)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(0o600)
    return path


def _valid_document() -> dict[str, object]:
    host_key = HostKey(PrivateKey.generate())
    return {
        "version": 1,
        "type": "x25519",
        "key_id": host_key.key_id,
        "public_key": host_key.public_key_b64,
        "private_key": base64.b64encode(bytes(host_key.private_key)).decode(),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version 2"),
        ({"version": "1"}, "version '1'"),
        ({"version": True}, "version True"),
        ({"type": "ed25519"}, "type 'ed25519'"),
        ({"private_key": None}, "private key field is malformed"),
        ({"private_key": "not base64!"}, "private key field is malformed"),
        ({"private_key": base64.b64encode(b"x" * 31).decode()}, "private key field is malformed"),
        ({"key_id": "x25519:" + "0" * 32}, "do not match"),
        ({"public_key": base64.b64encode(b"\x01" * 32).decode()}, "do not match"),
    ],
)
def test_refuses_malformed_key_file_fields(state_dir: Path, change: dict[str, object], message: str) -> None:
    document = _valid_document() | change
    _write_key_file(state_dir, json.dumps(document))
    with pytest.raises(KeyFileError, match=message):
        load_host_key(state_dir)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"\xff\xfe", b"-----BEGIN PRIVATE KEY-----\n"])
def test_refuses_a_file_that_is_not_a_key_file(state_dir: Path, content: bytes) -> None:
    path = _write_key_file(state_dir, content)
    with pytest.raises(KeyFileError, match="not a certstore host key file") as info:
        load_host_key(state_dir)
    assert str(path) in str(info.value)


def test_messages_never_contain_the_private_key(state_dir: Path) -> None:
    document = _valid_document()
    private_b64 = str(document["private_key"])
    document["key_id"] = "tampered"
    _write_key_file(state_dir, json.dumps(document))
    with pytest.raises(KeyFileError) as info:
        load_host_key(state_dir)
    assert private_b64 not in str(info.value)


def test_repr_does_not_leak_the_private_key(state_dir: Path) -> None:
    host_key = generate_host_key(state_dir)
    private_raw = bytes(host_key.private_key)
    for text in (repr(host_key), str(host_key), f"{host_key}", repr([host_key])):
        assert host_key.key_id in text
        assert base64.b64encode(private_raw).decode() not in text
        assert private_raw.hex() not in text
        assert repr(private_raw) not in text


# --- public keys from documents ----------------------------------------------------------------


def test_public_key_from_b64_round_trip() -> None:
    host_key = HostKey(PrivateKey.generate())
    assert public_key_from_b64(host_key.public_key_b64) == host_key.public_key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "decodes to 0"),
        ("AAAA", "decodes to 3"),
        (base64.b64encode(b"k" * 33).decode(), "decodes to 33"),
        ("not base64 at all", "not valid base64"),
        (base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "not valid base64"),
        (base64.b64encode(b"k" * 32).decode() + "\n", "not"),
        (base64.b64encode(bytes(32)).decode(), "low-order"),  # the all-zero point
        (base64.b64encode(b"\x01" + bytes(31)).decode(), "low-order"),  # the identity point
        (123, "base64 string"),
    ],
)
def test_public_key_from_b64_refuses_bad_keys(text: object, message: str) -> None:
    with pytest.raises(InvalidPublicKey, match=message) as info:
        public_key_from_b64(text, field="public_key")  # type: ignore[arg-type]
    assert isinstance(info.value, ValidationError)
    assert isinstance(info.value, SealingError)
    assert info.value.field == "public_key"


def test_public_key_from_b64_refuses_non_canonical_base64() -> None:
    canonical = base64.b64encode(b"\x07" * 32).decode()
    assert canonical.endswith("c=")
    # 'd' differs from 'c' only in the padding bits: the same bytes, a second spelling
    with pytest.raises(InvalidPublicKey, match="canonical"):
        public_key_from_b64(canonical[:-2] + "d=")


def test_previous_keys_ignore_files_that_are_not_backups(state_dir: Path) -> None:
    first = generate_host_key(state_dir)
    generate_host_key(state_dir, overwrite=True)
    (state_dir / "hostkey.json.bak").write_text("an admin's own copy, not ours")
    (state_dir / "hostkey.json.orig").write_text("{}")
    assert load_previous_keys(state_dir) == [first]


def test_a_damaged_backup_is_reported(state_dir: Path) -> None:
    generate_host_key(state_dir)
    generate_host_key(state_dir, overwrite=True)
    [backup] = [p for p in state_dir.iterdir() if p.name != "hostkey.json"]
    backup.write_text("{}")
    with pytest.raises(KeyFileError, match=backup.name):
        load_previous_keys(state_dir)


def test_rotation_backs_up_even_a_key_file_with_unsafe_mode_as_0600(state_dir: Path) -> None:
    first = generate_host_key(state_dir)
    key_file_path(state_dir).chmod(0o644)
    generate_host_key(state_dir, overwrite=True)
    assert mode(key_file_path(state_dir)) == 0o600
    assert load_previous_keys(state_dir) == [first]
