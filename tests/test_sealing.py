"""Tests for store.sealing: who can open an envelope, tamper detection, re-sealing, and plan_reseal."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey, PublicKey

from store.errors import NotARecipient, SealingError, TamperedEnvelope, UnsupportedEnvelopeVersion
from store.hostkey import HostKey, key_id
from store.sealing import (
    ALGORITHM,
    Holder,
    ResealPlan,
    add_recipients,
    envelope_key_ids,
    open_envelope,
    open_private_key_pem,
    plan_reseal,
    seal,
    seal_private_key_pem,
    validate_envelope,
)

SECRET = b"-----BEGIN PRIVATE KEY-----\nnot really, but secret enough for the tamper loops\n"

# X25519 keys are cheap: a pool for the property tests, plus named hosts for the unit tests.
POOL = [HostKey(PrivateKey.generate()) for _ in range(201)]
CERTMGR, WEB1, WEB2, WEB3 = (HostKey(PrivateKey.generate()) for _ in range(4))

# RSA key generation is slow: make a few once and let hypothesis choose among them.
RSA_KEYS = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
EC_KEYS = [ec.generate_private_key(curve) for curve in (ec.SECP256R1(), ec.SECP384R1()) for _ in range(3)]


def pem_of(key: PrivateKeyTypes, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def sealed_for(*hosts: HostKey, plaintext: bytes = SECRET) -> dict[str, Any]:
    return dict(seal(plaintext, {f"host{i}": h.public_key for i, h in enumerate(hosts)}))


def flip_bit(raw: bytes, position: int) -> bytes:
    changed = bytearray(raw)
    changed[position] ^= 1 << (position % 8)
    return bytes(changed)


# --- format ------------------------------------------------------------------------------------


def test_envelope_format_is_json_safe_and_indexed_by_computed_key_ids() -> None:
    envelope = seal(SECRET, {"web1": WEB1.public_key, "web2": WEB2.public_key})
    assert set(envelope) == {"v", "alg", "ciphertext", "recipients"}
    assert envelope["v"] == 1
    assert envelope["alg"] == ALGORITHM == "x25519-sealedbox+xsalsa20poly1305"
    assert set(envelope["recipients"]) == {WEB1.key_id, WEB2.key_id}
    assert envelope_key_ids(envelope) == {WEB1.key_id, WEB2.key_id}
    text = json.dumps(envelope)
    assert b"PRIVATE KEY" not in text.encode()
    assert open_envelope(json.loads(text), WEB2) == SECRET
    # nonce 24 + MAC 16 + plaintext; sealed data key: ephemeral key 32 + MAC 16 + data key 32
    assert len(base64.b64decode(envelope["ciphertext"])) == 24 + 16 + len(SECRET)
    for sealed in envelope["recipients"].values():
        assert len(base64.b64decode(sealed)) == 80


def test_each_seal_uses_a_fresh_data_key() -> None:
    first, second = sealed_for(WEB1), sealed_for(WEB1)
    assert first["ciphertext"] != second["ciphertext"]
    assert first["recipients"] != second["recipients"]


def test_mapping_labels_are_never_used_as_key_ids() -> None:
    envelope = seal(SECRET, {WEB2.key_id: WEB1.public_key})  # a label that lies about the key
    assert envelope_key_ids(envelope) == {WEB1.key_id}
    assert open_envelope(envelope, WEB1) == SECRET
    with pytest.raises(NotARecipient):
        open_envelope(envelope, WEB2)


def test_the_same_key_twice_is_sealed_once() -> None:
    envelope = seal(SECRET, [WEB1.public_key, PublicKey(bytes(WEB1.public_key)), WEB2.public_key])
    assert envelope_key_ids(envelope) == {WEB1.key_id, WEB2.key_id}


@pytest.mark.parametrize("recipients", [[], {}, iter([])])
def test_seal_needs_a_recipient(recipients: Any) -> None:
    with pytest.raises(SealingError, match="at least one recipient"):
        seal(SECRET, recipients)


def test_seal_refuses_something_that_is_not_a_public_key() -> None:
    with pytest.raises(SealingError, match="web1 is a HostKey"):
        seal(SECRET, {"web1": WEB1})  # type: ignore[arg-type]


def test_seal_refuses_a_low_order_public_key_cleanly() -> None:
    with pytest.raises(SealingError, match="not a usable X25519 public key"):
        seal(SECRET, {"bad": PublicKey(bytes(32))})


def test_small_secrets_use_the_same_envelope() -> None:
    hmac_key = b"\x00\x01EAB-hmac\xff"
    assert open_envelope(seal(hmac_key, [CERTMGR.public_key]), CERTMGR) == hmac_key
    assert open_envelope(seal(b"", [CERTMGR.public_key]), CERTMGR) == b""


# --- who can open ------------------------------------------------------------------------------


def test_server_b_cannot_open_what_was_sealed_for_a() -> None:
    envelope = seal(SECRET, {"certmgr": CERTMGR.public_key, "web1": WEB1.public_key})
    assert open_envelope(envelope, WEB1) == SECRET
    with pytest.raises(NotARecipient) as info:
        open_envelope(envelope, WEB2)
    assert info.value.key_id == WEB2.key_id
    message = str(info.value)
    assert WEB2.key_id in message and WEB1.key_id in message and CERTMGR.key_id in message


def test_not_a_recipient_message_stays_short_with_many_recipients() -> None:
    envelope = seal(SECRET, [h.public_key for h in POOL[:200]])
    with pytest.raises(NotARecipient, match=r"\(200 in all\)") as info:
        open_envelope(envelope, POOL[200])
    assert len(str(info.value)) < 1000


def test_previous_keys_open_envelopes_not_yet_resealed() -> None:
    old, new = WEB1, WEB3
    envelope = sealed_for(CERTMGR, old)
    assert open_envelope(envelope, [new, old]) == SECRET
    with pytest.raises(NotARecipient) as info:
        open_envelope(envelope, [new, WEB2])
    assert info.value.key_id == new.key_id
    with pytest.raises(SealingError, match="no host key"):
        open_envelope(envelope, [])


# --- tampering ---------------------------------------------------------------------------------


def test_every_bit_flip_in_the_ciphertext_is_detected() -> None:
    envelope = sealed_for(WEB1, WEB2)
    raw = base64.b64decode(envelope["ciphertext"])
    for position in range(len(raw)):
        tampered = envelope | {"ciphertext": b64(flip_bit(raw, position))}
        for host in (WEB1, WEB2):
            with pytest.raises(TamperedEnvelope, match="ciphertext failed authentication"):
                open_envelope(tampered, host)


def test_every_bit_flip_in_each_sealed_data_key_is_detected() -> None:
    envelope = sealed_for(WEB1, WEB2, WEB3)
    for host in (WEB1, WEB2, WEB3):
        raw = base64.b64decode(envelope["recipients"][host.key_id])
        for position in range(len(raw)):
            recipients = envelope["recipients"] | {host.key_id: b64(flip_bit(raw, position))}
            with pytest.raises(TamperedEnvelope, match=f"sealed data key for {host.key_id}"):
                open_envelope(envelope | {"recipients": recipients}, host)


def test_a_sealed_key_moved_to_another_recipient_is_detected() -> None:
    envelope = sealed_for(WEB1, WEB2)
    recipients = envelope["recipients"]
    swapped = {WEB1.key_id: recipients[WEB2.key_id], WEB2.key_id: recipients[WEB1.key_id]}
    with pytest.raises(TamperedEnvelope):
        open_envelope(envelope | {"recipients": swapped}, WEB1)


def test_a_ciphertext_from_another_envelope_is_detected() -> None:
    one, other = sealed_for(WEB1), sealed_for(WEB1)
    with pytest.raises(TamperedEnvelope):
        open_envelope(one | {"ciphertext": other["ciphertext"]}, WEB1)


def _truncations() -> list[tuple[str, Any]]:
    envelope = sealed_for(WEB1)
    ciphertext = base64.b64decode(envelope["ciphertext"])
    sealed = base64.b64decode(envelope["recipients"][WEB1.key_id])
    cases: list[tuple[str, Any]] = []
    for cut in (0, 1, 23, 24, 39, 40, len(ciphertext) - 1):
        cases.append(("ciphertext", b64(ciphertext[:cut])))
    cases.append(("ciphertext", b64(ciphertext + b"\x00")))
    for cut in (0, 1, 32, 48, 79):
        cases.append(("sealed", b64(sealed[:cut])))
    cases.append(("sealed", b64(sealed + b"\x00")))
    return cases


@pytest.mark.parametrize(("where", "value"), _truncations())
def test_truncated_or_extended_parts_are_detected(where: str, value: str) -> None:
    envelope = sealed_for(WEB1)
    if where == "ciphertext":
        envelope["ciphertext"] = value
    else:
        envelope["recipients"] = {WEB1.key_id: value}
    with pytest.raises(TamperedEnvelope):
        open_envelope(envelope, WEB1)


def _bad_base64_cases() -> list[str]:
    good = sealed_for(WEB1)["ciphertext"]
    return [
        good[:-1],  # broken padding
        good + "=",
        "!" + good[1:],
        good.replace("A", "-", 1) if "A" in good else "-" + good[1:],
        good[:10] + "\n" + good[10:],
        good[:10] + " " + good[10:],
        "é" + good[1:],
        "",
    ]


@pytest.mark.parametrize("bad", _bad_base64_cases())
def test_bad_base64_is_detected(bad: str) -> None:
    envelope = sealed_for(WEB1)
    with pytest.raises(TamperedEnvelope):
        open_envelope(envelope | {"ciphertext": bad}, WEB1)
    with pytest.raises(TamperedEnvelope):
        open_envelope(envelope | {"recipients": {WEB1.key_id: bad}}, WEB1)


def test_non_canonical_base64_is_detected() -> None:
    envelope = seal(b"x" * 9, [WEB1.public_key])  # 24 + 16 + 9 = 49 bytes: ends in "=="
    text = envelope["ciphertext"]
    assert text.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    # the last character before "==" carries 4 unused bits: flipping the lowest spells the same bytes
    respelled = text[:-3] + alphabet[alphabet.index(text[-3]) ^ 1] + "=="
    assert base64.b64decode(respelled) == base64.b64decode(text)
    with pytest.raises(TamperedEnvelope, match="canonical"):
        open_envelope(envelope | {"ciphertext": respelled}, WEB1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ciphertext": None}, "ciphertext must be a base64 string"),
        ({"ciphertext": 12}, "ciphertext must be a base64 string"),
        ({"ciphertext": ["AAAA"]}, "ciphertext must be a base64 string"),
        ({"ciphertext": {"a": 1}}, "ciphertext must be a base64 string"),
        ({"recipients": []}, "recipients must be a non-empty JSON object"),
        ({"recipients": {}}, "recipients must be a non-empty JSON object"),
        ({"recipients": "x"}, "recipients must be a non-empty JSON object"),
        ({"recipients": None}, "recipients must be a non-empty JSON object"),
        ({"alg": "x25519-sealedbox+aes256gcm"}, "must say alg"),
        ({"alg": None}, "must say alg"),
        ({"extra": "field"}, "unexpected fields: extra"),
    ],
)
def test_wrong_types_and_fields_are_detected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TamperedEnvelope, match=message):
        open_envelope(sealed_for(WEB1) | change, WEB1)


@pytest.mark.parametrize("field", ["alg", "ciphertext", "recipients"])
def test_missing_fields_are_detected(field: str) -> None:
    envelope = sealed_for(WEB1)
    del envelope[field]
    with pytest.raises(TamperedEnvelope, match=f"missing fields: {field}"):
        open_envelope(envelope, WEB1)


def test_wrong_sealed_key_types_and_bad_key_ids_are_detected() -> None:
    envelope = sealed_for(WEB1)
    sealed = envelope["recipients"][WEB1.key_id]
    for recipients in (
        {WEB1.key_id: None},
        {WEB1.key_id: 5},
        {WEB1.key_id: [sealed]},
        {WEB1.key_id.upper(): sealed},
        {WEB1.key_id + "0": sealed},
        {"web1": sealed},
    ):
        with pytest.raises(TamperedEnvelope):
            open_envelope(envelope | {"recipients": recipients}, WEB1)


@pytest.mark.parametrize("not_an_envelope", [None, "envelope", b"bytes", 7, [1, 2]])
def test_not_an_envelope_at_all(not_an_envelope: Any) -> None:
    with pytest.raises(TamperedEnvelope, match="is a JSON object"):
        open_envelope(not_an_envelope, WEB1)


@pytest.mark.parametrize("version", [2, 0, -1, "1", "2", 1.0, True, None, [1], {"v": 1}])
def test_unknown_versions_are_refused(version: Any) -> None:
    with pytest.raises(UnsupportedEnvelopeVersion, match="upgrade certstore") as info:
        open_envelope(sealed_for(WEB1) | {"v": version}, WEB1)
    assert info.value.version == version
    assert repr(version) in str(info.value)


def test_missing_version_is_refused() -> None:
    envelope = sealed_for(WEB1)
    del envelope["v"]
    with pytest.raises(UnsupportedEnvelopeVersion, match="no format version") as info:
        open_envelope(envelope, WEB1)
    assert info.value.version is None


def test_validate_envelope_checks_structure_without_a_key() -> None:
    envelope = sealed_for(WEB1)
    validate_envelope(envelope)
    with pytest.raises(UnsupportedEnvelopeVersion):
        validate_envelope(envelope | {"v": 2})
    with pytest.raises(TamperedEnvelope):
        validate_envelope(envelope | {"ciphertext": "AAAA"})


def test_error_messages_never_quote_envelope_content() -> None:
    envelope = sealed_for(WEB1)
    ciphertext = base64.b64decode(envelope["ciphertext"])
    cases = [
        envelope | {"ciphertext": b64(flip_bit(ciphertext, 50))},
        envelope | {"ciphertext": envelope["ciphertext"][:-1]},
        envelope | {"recipients": {WEB1.key_id: envelope["ciphertext"]}},
    ]
    for case in cases:
        with pytest.raises(TamperedEnvelope) as info:
            open_envelope(case, WEB1)
        message = str(info.value)
        assert envelope["ciphertext"][:16] not in message
        assert envelope["recipients"][WEB1.key_id][:16] not in message
        assert info.value.__cause__ is None  # no nacl/binascii exception chained with its details
        assert info.value.__context__ is None or info.value.__suppress_context__


# --- re-sealing --------------------------------------------------------------------------------


def test_add_recipients_keeps_the_ciphertext_and_old_recipients() -> None:
    envelope = seal(SECRET, {"certmgr": CERTMGR.public_key, "web1": WEB1.public_key})
    before = copy.deepcopy(envelope)
    resealed = add_recipients(envelope, CERTMGR, {"web2": WEB2.public_key, "web3": WEB3.public_key})
    assert envelope == before  # the input is not modified
    assert resealed["ciphertext"] == envelope["ciphertext"]
    assert envelope_key_ids(resealed) == {CERTMGR.key_id, WEB1.key_id, WEB2.key_id, WEB3.key_id}
    for kid in (CERTMGR.key_id, WEB1.key_id):
        assert resealed["recipients"][kid] == envelope["recipients"][kid]
    for host in (CERTMGR, WEB1, WEB2, WEB3):
        assert open_envelope(resealed, host) == SECRET


def test_add_recipients_leaves_existing_entries_alone() -> None:
    envelope = sealed_for(CERTMGR, WEB1)
    resealed = add_recipients(envelope, CERTMGR, [WEB1.public_key])
    assert resealed == envelope


def test_add_recipients_needs_an_opener_that_is_a_recipient() -> None:
    envelope = sealed_for(CERTMGR, WEB1)
    with pytest.raises(NotARecipient):
        add_recipients(envelope, WEB2, [WEB2.public_key])


def test_a_rotated_certmgr_reseals_with_its_previous_key() -> None:
    old_certmgr, new_certmgr = CERTMGR, WEB3
    envelope = sealed_for(old_certmgr, WEB1)
    resealed = add_recipients(envelope, [new_certmgr, old_certmgr], [new_certmgr.public_key])
    assert open_envelope(resealed, new_certmgr) == SECRET


def test_add_recipients_refuses_a_tampered_ciphertext() -> None:
    envelope = sealed_for(CERTMGR)
    raw = base64.b64decode(envelope["ciphertext"])
    with pytest.raises(TamperedEnvelope):
        add_recipients(envelope | {"ciphertext": b64(flip_bit(raw, 30))}, CERTMGR, [WEB1.public_key])


# --- private key PEM helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "pem",
    [
        pem_of(EC_KEYS[0], serialization.PrivateFormat.PKCS8),
        pem_of(EC_KEYS[0], serialization.PrivateFormat.TraditionalOpenSSL),
        pem_of(RSA_KEYS[0], serialization.PrivateFormat.TraditionalOpenSSL),
    ],
)
def test_private_key_pem_round_trip(pem: bytes) -> None:
    envelope = seal_private_key_pem(pem, [CERTMGR.public_key, WEB1.public_key])
    assert open_private_key_pem(envelope, WEB1) == pem


def _encrypted_pem() -> bytes:
    return EC_KEYS[0].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (b"", "exactly one PEM block, found 0"),
        (b"hello", "exactly one PEM block, found 0"),
        (pem_of(EC_KEYS[0], serialization.PrivateFormat.PKCS8) * 2, "exactly one PEM block, found 2"),
        (_encrypted_pem(), "password-protected"),
        (
            EC_KEYS[0]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            "not a PEM private key",
        ),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM private key"),
        ("-----BEGIN PRIVATE KEY-----", "is bytes, got str"),
    ],
)
def test_seal_private_key_pem_refuses_what_is_not_one_private_key(pem: Any, message: str) -> None:
    with pytest.raises(SealingError, match=message):
        seal_private_key_pem(pem, [CERTMGR.public_key])


def test_open_private_key_pem_refuses_an_envelope_holding_something_else() -> None:
    envelope = seal(b"an EAB HMAC key", [WEB1.public_key])
    with pytest.raises(SealingError, match="holds something else") as info:
        open_private_key_pem(envelope, WEB1)
    assert "EAB" not in str(info.value)


# --- plan_reseal -------------------------------------------------------------------------------

C = "x25519:" + "c" * 32
W1 = "x25519:" + "1" * 32
W1_OLD = "x25519:" + "a" * 32
W2 = "x25519:" + "2" * 32
W3 = "x25519:" + "3" * 32


def holders(*names: str) -> list[Holder]:
    table = {
        "certmgr": Holder("certmgr", C),
        "web1": Holder("web1", W1, frozenset({W1_OLD})),
        "web2": Holder("web2", W2),
        "web3": Holder("web3", W3),
    }
    return [table[name] for name in names]


def test_plan_nothing_to_do() -> None:
    plan = plan_reseal({C, W1}, holders("certmgr", "web1"))
    assert plan == ResealPlan(
        add=frozenset(),
        removed=frozenset(),
        retired=frozenset(),
        needs_rekey=False,
        reason="recipients are up to date",
    )


def test_plan_added_server_is_a_reseal() -> None:
    plan = plan_reseal({C, W1}, holders("certmgr", "web1", "web3"))
    assert plan.add == {W3}
    assert not plan.needs_rekey
    assert plan.reason == f're-seal for server "web3" (key {W3})'


def test_plan_removed_server_is_a_rekey() -> None:
    plan = plan_reseal({C, W1, W2}, holders("certmgr", "web1"), known_names={W2: "web2"})
    assert plan.removed == {W2}
    assert plan.needs_rekey
    assert plan.reason == f'server "web2" lost access (key {W2}); the key it could open must be replaced'


def test_plan_removed_and_added_at_once_is_a_rekey() -> None:
    plan = plan_reseal({C, W1, W2}, holders("certmgr", "web3"), known_names={W1: "web1", W2: "web2"})
    assert plan.add == {W3}
    assert plan.removed == {W1, W2}
    assert plan.needs_rekey
    assert 'server "web1" lost access' in plan.reason and 'server "web2" lost access' in plan.reason
    assert plan.reason.endswith("the key they could open must be replaced")


def test_plan_unknown_key_is_exposure() -> None:
    stranger = "x25519:" + "f" * 32
    plan = plan_reseal({C, stranger}, holders("certmgr"))
    assert plan.needs_rekey
    assert f"unknown key {stranger} can open it" in plan.reason


def test_plan_rotated_server_key_is_a_reseal_not_a_rekey() -> None:
    plan = plan_reseal({C, W1_OLD}, holders("certmgr", "web1"))
    assert plan.add == {W1}
    assert plan.retired == {W1_OLD}
    assert plan.removed == frozenset()
    assert not plan.needs_rekey


def test_plan_previous_key_of_a_server_that_lost_access_is_exposure() -> None:
    plan = plan_reseal({C, W1_OLD}, holders("certmgr"), known_names={W1_OLD: "web1"})
    assert plan.removed == {W1_OLD}
    assert plan.needs_rekey


def test_plan_flow_with_real_envelopes() -> None:
    envelope = sealed_for(CERTMGR, WEB1)
    wanted = [Holder("certmgr", CERTMGR.key_id), Holder("web1", WEB1.key_id), Holder("web2", WEB2.key_id)]
    plan = plan_reseal(envelope_key_ids(envelope), wanted)
    public = {h.key_id: h.public_key for h in (CERTMGR, WEB1, WEB2)}
    resealed = add_recipients(envelope, CERTMGR, [public[kid] for kid in plan.add])
    assert plan_reseal(envelope_key_ids(resealed), wanted).reason == "recipients are up to date"
    assert open_envelope(resealed, WEB2) == SECRET


# --- properties --------------------------------------------------------------------------------

PEM_FORMATS = [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL]
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def recipients_and_outsider(draw: st.DrawFn) -> tuple[list[HostKey], HostKey]:
    order = draw(st.permutations(range(len(POOL))))
    count = draw(st.integers(min_value=1, max_value=len(POOL) - 1))
    return [POOL[i] for i in order[:count]], POOL[order[count]]


@PROPERTY_SETTINGS
@given(
    key=st.sampled_from(RSA_KEYS + EC_KEYS),
    fmt=st.sampled_from(PEM_FORMATS),
    hosts=recipients_and_outsider(),
)
def test_property_private_keys_round_trip_for_every_recipient(
    key: PrivateKeyTypes, fmt: serialization.PrivateFormat, hosts: tuple[list[HostKey], HostKey]
) -> None:
    recipients, outsider = hosts
    pem = pem_of(key, fmt)
    envelope = seal_private_key_pem(pem, {f"server{i}": h.public_key for i, h in enumerate(recipients)})
    assert envelope_key_ids(envelope) == {key_id(h.public_key) for h in recipients}
    # open_private_key_pem parses the PEM (≈30 ms for RSA): once is enough, the bytes are what matter
    assert open_private_key_pem(envelope, recipients[-1]) == pem
    for host in recipients:
        assert open_envelope(envelope, host) == pem
    with pytest.raises(NotARecipient):
        open_private_key_pem(envelope, outsider)


@PROPERTY_SETTINGS
@given(plaintext=st.binary(max_size=4096), hosts=recipients_and_outsider(), split=st.integers(1, 200))
def test_property_reseal_keeps_ciphertext_and_everyone_opens(
    plaintext: bytes, hosts: tuple[list[HostKey], HostKey], split: int
) -> None:
    recipients, outsider = hosts
    first, later = recipients[: min(split, len(recipients))], recipients[min(split, len(recipients)) :]
    envelope = seal(plaintext, [h.public_key for h in first])
    resealed = add_recipients(envelope, first[0], [h.public_key for h in later])
    assert resealed["ciphertext"] == envelope["ciphertext"]
    for host in recipients:
        assert open_envelope(resealed, host) == plaintext
    with pytest.raises(NotARecipient):
        open_envelope(resealed, outsider)
