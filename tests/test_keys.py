"""Keys, CSRs and certificates: every key type, SANs, key/certificate matching, chain verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from agent.errors import CertificateError
from agent.keys import (
    build_csr,
    certificate_info,
    generate_private_key,
    key_matches_certificate,
    split_chain,
    verify_chain,
)
from store.errors import ValidationError
from store.names import KeyType

NOW = datetime.now(UTC)


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def _cert(
    subject_key_pem: bytes,
    issuer_key_pem: bytes,
    *,
    subject: str,
    issuer: str,
    names: list[str] | None = None,
    ca: bool = False,
    serial: int = 0x0102AB,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=30),
) -> bytes:
    """A certificate for ``subject_key_pem`` signed by ``issuer_key_pem`` (self-signed when they match)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(_load_key(subject_key_pem).public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    cert = builder.sign(_load_key(issuer_key_pem), hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    """A root, an intermediate and a leaf (ECDSA, fast), plus an unrelated root."""
    root_key = generate_private_key("ecdsa-p256")
    inter_key = generate_private_key("ecdsa-p384")
    leaf_key = generate_private_key("ecdsa-p256")
    other_key = generate_private_key("ecdsa-p256")
    return {
        "root_key": root_key,
        "leaf_key": leaf_key,
        "root": _cert(root_key, root_key, subject="Test Root", issuer="Test Root", ca=True),
        "inter": _cert(inter_key, root_key, subject="Test Inter", issuer="Test Root", ca=True),
        "leaf": _cert(
            leaf_key,
            inter_key,
            subject="www.example.com",
            issuer="Test Inter",
            names=["www.example.com", "*.example.com"],
        ),
        "other_root": _cert(other_key, other_key, subject="Other Root", issuer="Other Root", ca=True),
        # Same issuer name as the real intermediate, different key: names line up, signature does not.
        "fake_inter": _cert(other_key, root_key, subject="Test Inter", issuer="Test Root", ca=True),
    }


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "kind", "size"),
    [
        ("ecdsa-p256", ec.EllipticCurvePrivateKey, 256),
        ("ecdsa-p384", ec.EllipticCurvePrivateKey, 384),
        ("rsa-2048", rsa.RSAPrivateKey, 2048),
        ("rsa-3072", rsa.RSAPrivateKey, 3072),
        ("rsa-4096", rsa.RSAPrivateKey, 4096),
    ],
)
def test_every_key_type_generates_unencrypted_pkcs8(key_type: str, kind: type, size: int) -> None:
    pem = generate_private_key(key_type)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, not the legacy EC/RSA armour
    key = _load_key(pem)
    assert isinstance(key, kind)
    assert key.key_size == size


def test_key_types_match_the_document_model() -> None:
    for key_type in KeyType:
        assert generate_private_key(key_type.value)


def test_unknown_key_type_is_a_validation_error_listing_the_choices() -> None:
    with pytest.raises(ValidationError) as caught:
        generate_private_key("dsa-1024")
    message = str(caught.value)
    assert "dsa-1024" in message
    assert "ecdsa-p256" in message and "rsa-4096" in message
    assert caught.value.field == "key_type"


def test_two_keys_differ() -> None:
    assert generate_private_key("ecdsa-p256") != generate_private_key("ecdsa-p256")


# --- CSRs ----------------------------------------------------------------------------------------


def test_csr_has_every_name_as_san_including_punycode_and_wildcard() -> None:
    key = generate_private_key("ecdsa-p256")
    names = ["www.example.com", "xn--bcher-kva.example", "*.example.com"]
    csr = x509.load_pem_x509_csr(build_csr(key, names))
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == names
    common_names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [attr.value for attr in common_names] == ["www.example.com"]
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == _load_key(key).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_csr_with_rsa_key_and_duplicate_names() -> None:
    key = generate_private_key("rsa-2048")
    csr = x509.load_pem_x509_csr(build_csr(key, ["a.example.com", "b.example.com", "a.example.com"]))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example.com", "b.example.com"]


def test_csr_first_name_longer_than_64_has_no_common_name() -> None:
    long_name = ("a" * 60) + ".example.com"
    assert len(long_name) > 64
    csr = x509.load_pem_x509_csr(build_csr(generate_private_key("ecdsa-p256"), [long_name, "b.example.com"]))
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [long_name, "b.example.com"]


@pytest.mark.parametrize("names", [[], ["bücher.example"], [""]])
def test_csr_refuses_no_names_or_u_labels(names: list[str]) -> None:
    with pytest.raises(ValidationError):
        build_csr(generate_private_key("ecdsa-p256"), names)


def test_bad_private_key_error_does_not_quote_the_input() -> None:
    secret = b"-----BEGIN PRIVATE KEY-----\nTOPSECRETTOPSECRET\n-----END PRIVATE KEY-----\n"
    with pytest.raises(CertificateError) as caught:
        build_csr(secret, ["www.example.com"])
    assert "TOPSECRET" not in str(caught.value)


# --- certificates --------------------------------------------------------------------------------


def test_key_matches_its_certificate_and_not_another(pki: dict[str, bytes]) -> None:
    assert key_matches_certificate(pki["leaf_key"], pki["leaf"])
    assert not key_matches_certificate(pki["root_key"], pki["leaf"])
    assert key_matches_certificate(pki["root_key"], pki["root"])


def test_key_matches_across_algorithms() -> None:
    rsa_key = generate_private_key("rsa-2048")
    ec_key = generate_private_key("ecdsa-p256")
    cert = _cert(rsa_key, rsa_key, subject="rsa", issuer="rsa")
    assert key_matches_certificate(rsa_key, cert)
    assert not key_matches_certificate(ec_key, cert)


def test_certificate_info(pki: dict[str, bytes]) -> None:
    info = certificate_info(pki["leaf"])
    assert info.serial_hex == "102ab"
    assert info.names == ("www.example.com", "*.example.com")
    assert info.issuer == "CN=Test Inter"
    assert info.not_before.tzinfo is not None and info.not_after.tzinfo is not None
    assert info.not_before < NOW < info.not_after
    der = x509.load_pem_x509_certificate(pki["leaf"]).fingerprint(hashes.SHA256())
    assert info.fingerprint_sha256 == der.hex()
    assert len(info.fingerprint_sha256) == 64


def test_certificate_info_without_san(pki: dict[str, bytes]) -> None:
    assert certificate_info(pki["root"]).names == ()


def test_split_chain_keeps_order_and_ignores_text_between(pki: dict[str, bytes]) -> None:
    bundle = pki["leaf"] + b"\n# intermediate\n" + pki["inter"]
    parts = split_chain(bundle)
    assert len(parts) == 2
    assert certificate_info(parts[0]).serial_hex == certificate_info(pki["leaf"]).serial_hex
    assert x509.load_pem_x509_certificate(parts[1]).subject.rfc4514_string() == "CN=Test Inter"


def test_split_chain_of_nothing_is_an_error() -> None:
    with pytest.raises(CertificateError):
        split_chain(b"no certificates here")


# --- chains --------------------------------------------------------------------------------------


def test_chain_verifies_to_its_root(pki: dict[str, bytes]) -> None:
    verify_chain([pki["leaf"], pki["inter"]], pki["root"])
    verify_chain([pki["leaf"], pki["inter"], pki["root"]], pki["root"])  # root copy at the end
    verify_chain([pki["inter"]], pki["root"])


def test_chain_to_another_root_fails(pki: dict[str, bytes]) -> None:
    with pytest.raises(CertificateError, match=r"Test Inter.*not issued by.*Other Root"):
        verify_chain([pki["leaf"], pki["inter"]], pki["other_root"])


def test_chain_with_missing_intermediate_fails(pki: dict[str, bytes]) -> None:
    with pytest.raises(CertificateError, match=r"www\.example\.com.*not issued by.*Test Root"):
        verify_chain([pki["leaf"]], pki["root"])


def test_chain_with_forged_intermediate_fails_on_the_signature(pki: dict[str, bytes]) -> None:
    with pytest.raises(CertificateError, match="not issued by"):
        verify_chain([pki["leaf"], pki["fake_inter"]], pki["root"])


def test_expired_certificate_in_chain_fails(pki: dict[str, bytes]) -> None:
    with pytest.raises(CertificateError, match="not valid at"):
        verify_chain([pki["leaf"], pki["inter"]], pki["root"], at=NOW + timedelta(days=365))


def test_empty_chain_fails(pki: dict[str, bytes]) -> None:
    with pytest.raises(CertificateError, match="empty"):
        verify_chain([], pki["root"])
