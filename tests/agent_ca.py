"""A test CA (root + intermediate, made with ``cryptography``) and credential documents sealed for hosts.

Used by the agent's unit and integration tests and by bench/: issuing here takes a millisecond, so
tests and benchmarks can write many certificate states without pebble.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nacl.public import PublicKey

from store import ids
from store.names import format_timestamp
from store.sealing import seal_private_key_pem


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Issued:
    """A leaf key and its chain (leaf, intermediate) as PEM."""

    key_pem: bytes
    chain: tuple[bytes, ...]
    serial: str
    fingerprint: str
    not_before: datetime
    not_after: datetime

    @property
    def chain_pem(self) -> str:
        return b"".join(self.chain).decode()


class TestCA:
    """A root and an intermediate; :meth:`issue` signs leaves with the intermediate."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._sign(
            _name("certstore test root"),
            self.root_key.public_key(),
            _name("certstore test root"),
            self.root_key,
            now,
            ca=True,
        )
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._sign(
            _name("certstore test intermediate"),
            self.int_key.public_key(),
            _name("certstore test root"),
            self.root_key,
            now,
            ca=True,
        )

    @staticmethod
    def _sign(
        subject: x509.Name,
        public_key: Any,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        now: datetime,
        *,
        ca: bool,
        names: Sequence[str] = (),
        days: int = 30,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def issue(self, names: Sequence[str], *, key_pem: bytes | None = None, days: int = 30) -> Issued:
        """A leaf for ``names`` (a fresh P-256 key unless ``key_pem`` is given)."""
        if key_pem is None:
            key_pem = _key_pem(ec.generate_private_key(ec.SECP256R1()))
        key = serialization.load_pem_private_key(key_pem, None)
        now = datetime.now(UTC)
        leaf = self._sign(
            _name(names[0]),
            key.public_key(),
            self.intermediate.subject,
            self.int_key,
            now,
            ca=False,
            names=names,
            days=days,
        )
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        der = leaf.public_bytes(serialization.Encoding.DER)
        return Issued(
            key_pem=key_pem,
            chain=(leaf_pem, self.intermediate.public_bytes(serialization.Encoding.PEM)),
            serial=f"{leaf.serial_number:x}",
            fingerprint=hashlib.sha256(der).hexdigest(),
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
        )


def request_doc(name: str, hostnames: Sequence[str], servers: Sequence[str], **fields: Any) -> dict[str, Any]:
    """A ``credential:<name>`` document."""
    return {
        "_id": ids.credential_id(name),
        "type": ids.KIND_CREDENTIAL,
        "hostnames": list(hostnames),
        "servers": list(servers),
        **fields,
    }


def state_doc(
    name: str,
    issued: Issued,
    recipients: Mapping[str, PublicKey],
    *,
    status: str = "issued",
    sealed: Any = None,
    **fields: Any,
) -> dict[str, Any]:
    """A ``credential:<name>:state`` document carrying ``issued``, its key sealed for ``recipients``."""
    return {
        "_id": ids.credential_state_id(name),
        "type": ids.KIND_CREDENTIAL_STATE,
        "status": status,
        "chain_pem": issued.chain_pem,
        "not_before": format_timestamp(issued.not_before),
        "not_after": format_timestamp(issued.not_after),
        "serial": issued.serial,
        "fingerprint_sha256": issued.fingerprint,
        "sealed_key": sealed if sealed is not None else seal_private_key_pem(issued.key_pem, recipients),
        "recipients": sorted(recipients),
        **fields,
    }
