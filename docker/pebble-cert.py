"""Make pebble's HTTPS listener certificate for the dry run in docker-compose.yml (run once).

Writes ``ca.pem`` (the CA the certmgr trusts through ``--ca-file``), ``cert.pem`` and ``key.pem``
(pebble's listener, valid for the names ``pebble`` and ``localhost``) into the directory given as
the only argument; files that already exist are kept, so the certmgr's trust survives restarts.
This CA signs nothing but pebble's listener and lives only in the dry run's ``pebble-certs`` volume.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMES = ("pebble", "localhost")
LIFETIME = timedelta(days=3650)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write(directory: Path) -> None:
    """Write ca.pem, cert.pem and key.pem into ``directory`` unless all three exist."""
    files = [directory / name for name in ("ca.pem", "cert.pem", "key.pem")]
    if all(path.is_file() for path in files):
        print(f"pebble listener certificate: kept ({directory})")
        return
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("certstore dry-run CA for pebble"))
        .issuer_name(_name("certstore dry-run CA for pebble"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(NAMES[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in NAMES]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_file, cert_file, key_file = files
    # Readable by pebble's own (unknown) user: a throwaway listener key on a private volume.
    key_file.write_bytes(key_pem)
    key_file.chmod(0o644)
    cert_file.write_bytes(_pem(leaf) + _pem(ca))
    ca_file.write_bytes(_pem(ca))
    print(f"pebble listener certificate: written ({directory})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pebble-cert.py DIRECTORY")
    write(Path(sys.argv[1]))
