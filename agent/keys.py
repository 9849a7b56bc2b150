"""Private keys, CSRs and certificates: generate, build, inspect and verify (pure functions, no I/O).

Private keys leave this module only as unencrypted PKCS#8 PEM bytes held in memory: the certmgr seals
them at once with :mod:`store.sealing`. No function here puts key material into a log line or an
exception message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from agent.errors import CertificateError
from store.errors import ValidationError
from store.names import KeyType

# RFC 5280 caps the commonName at 64 characters; longer first names go only into the SAN extension.
MAX_COMMON_NAME = 64

_CURVES: dict[KeyType, ec.EllipticCurve] = {
    KeyType.ECDSA_P256: ec.SECP256R1(),
    KeyType.ECDSA_P384: ec.SECP384R1(),
}
_RSA_BITS: dict[KeyType, int] = {
    KeyType.RSA_2048: 2048,
    KeyType.RSA_3072: 3072,
    KeyType.RSA_4096: 4096,
}


@dataclass(frozen=True)
class CertInfo:
    """What certstore records about a certificate.

    ``serial_hex`` is lowercase hex without leading zeros or colons; ``fingerprint_sha256`` is 64
    lowercase hex digits over the DER encoding; ``names`` are the SAN DNS names in certificate order;
    ``issuer`` is the issuer's RFC 4514 distinguished name.
    """

    serial_hex: str
    not_before: datetime
    not_after: datetime
    names: tuple[str, ...]
    fingerprint_sha256: str
    issuer: str


def generate_private_key(key_type: str) -> bytes:
    """A new private key of ``key_type`` (one of :class:`store.names.KeyType`) as PKCS#8 PEM bytes."""
    try:
        kind = KeyType(key_type)
    except ValueError:
        choices = ", ".join(k.value for k in KeyType)
        raise ValidationError(
            f"unknown key type {key_type!r}: use one of {choices}", field="key_type"
        ) from None
    key: CertificateIssuerPrivateKeyTypes
    if kind in _CURVES:
        key = ec.generate_private_key(_CURVES[kind])
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[kind])
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """Parse an unencrypted PEM private key (ECDSA or RSA); the error never quotes the key."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        # The library's message does not contain key bytes, but keep ours fixed to be sure.
        raise CertificateError(f"not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError(f"unsupported private key algorithm {type(key).__name__}: use ECDSA or RSA")
    return key


def build_csr(key_pem: bytes, names: Sequence[str]) -> bytes:
    """A PEM CSR for ``names`` (IDNA A-labels, ``*.`` wildcards allowed) signed with ``key_pem``.

    Every name becomes a SAN DNS name (duplicates dropped, order kept); the first name is also the
    subject commonName when it fits in 64 characters, otherwise the subject is empty.
    """
    unique = list(dict.fromkeys(names))
    if not unique:
        raise ValidationError("a certificate request needs at least one host name", field="names")
    for name in unique:
        if not name or not name.isascii():
            raise ValidationError(
                f"host name {name!r} must be a non-empty IDNA A-label (punycode) name", field="names"
            )
    key = load_private_key(key_pem)
    subject = []
    if len(unique[0]) <= MAX_COMMON_NAME:
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, unique[0]))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in unique]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_certificate(cert_pem: bytes) -> x509.Certificate:
    """Parse the first PEM certificate in ``cert_pem``."""
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_certificate(key_pem: bytes, cert_pem: bytes) -> bool:
    """True if the certificate's public key is the public half of ``key_pem``."""
    key = load_private_key(key_pem)
    cert = load_certificate(cert_pem)
    return _spki(key.public_key()) == _spki(cert.public_key())


def csr_public_key_matches(csr_pem: bytes, cert_pem: bytes) -> bool:
    """True if the certificate carries the public key of the CSR (what the CA must have signed)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate request: {exc}") from None
    return _spki(csr.public_key()) == _spki(load_certificate(cert_pem).public_key())


def csr_names(csr_pem: bytes) -> list[str]:
    """The SAN DNS names of a PEM CSR, in order."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate request: {exc}") from None
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.DNSName)


def certificate_info(cert_pem: bytes) -> CertInfo:
    """Serial, validity (aware UTC), SAN names, SHA-256 fingerprint and issuer of a PEM certificate."""
    cert = load_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        serial_hex=f"{cert.serial_number:x}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        names=names,
        fingerprint_sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        issuer=cert.issuer.rfc4514_string(),
    )


def split_chain(fullchain_pem: bytes) -> list[bytes]:
    """The certificates of a PEM bundle, each as its own PEM block, in the bundle's order."""
    try:
        certs = x509.load_pem_x509_certificates(fullchain_pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate chain: {exc}") from None
    return [cert.public_bytes(serialization.Encoding.PEM) for cert in certs]


def _describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string() or '(empty subject)'} (serial {cert.serial_number:x})"


def _check_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        reason = str(exc) or "bad signature"
        raise CertificateError(
            f"certificate {_describe(cert)} is not issued by {_describe(issuer)}: {reason}"
        ) from None


def verify_chain(chain_pems: Sequence[bytes], root_pem: bytes, *, at: datetime | None = None) -> None:
    """Check that ``chain_pems`` (leaf first, then intermediates) leads to the trusted ``root_pem``.

    Each certificate must be signed by the next, the last by the root (a copy of the root at the end
    of the chain is allowed), and every certificate including the root must be valid at ``at`` (now by
    default). Raises :class:`agent.errors.CertificateError` naming the first link that fails.
    """
    if not chain_pems:
        raise CertificateError("the certificate chain is empty")
    when = at or datetime.now(UTC)
    root = load_certificate(root_pem)
    chain = [load_certificate(pem) for pem in chain_pems]
    if len(chain) > 1 and chain[-1] == root:
        chain.pop()
    for cert in [*chain, root]:
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise CertificateError(
                f"certificate {_describe(cert)} is not valid at {when:%Y-%m-%dT%H:%M:%SZ} "
                f"(valid {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to "
                f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})"
            )
    for cert, issuer in zip(chain, [*chain[1:], root], strict=True):
        _check_signed_by(cert, issuer)
