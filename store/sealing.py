"""Envelope sealing: a secret encrypted once with a fresh data key, that key sealed to each recipient.

Format version 1 (docs/sealing.md has the whole story)::

    {"v": 1, "alg": "x25519-sealedbox+xsalsa20poly1305",
     "ciphertext": b64(SecretBox(data_key).encrypt(plaintext)),          # nonce ‖ MAC ‖ ciphertext
     "recipients": {key_id(pub): b64(SealedBox(pub).encrypt(data_key)), ...}}

Used for TLS private keys (``seal_private_key_pem``) and for small secrets (EAB HMAC keys, DNS
provider credentials) alike. Removing a recipient is deliberately not offered: whoever could open
the envelope may have kept the secret, so ``plan_reseal`` reports that the key must be replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypedDict

import nacl.exceptions
import nacl.utils
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from nacl.public import PublicKey, SealedBox
from nacl.secret import SecretBox

from store.errors import NotARecipient, SealingError, TamperedEnvelope, UnsupportedEnvelopeVersion
from store.hostkey import KEY_ID_PREFIX, HostKey, decode_base64, encode_base64, key_id

ENVELOPE_VERSION = 1
ALGORITHM = "x25519-sealedbox+xsalsa20poly1305"
_FIELDS = frozenset({"v", "alg", "ciphertext", "recipients"})
_DATA_KEY_SIZE = SecretBox.KEY_SIZE
# SealedBox output: ephemeral public key (32) ‖ MAC (16) ‖ the sealed data key (32)
_SEALED_KEY_SIZE = PublicKey.SIZE + SecretBox.MACBYTES + _DATA_KEY_SIZE
_MIN_CIPHERTEXT_SIZE = SecretBox.NONCE_SIZE + SecretBox.MACBYTES
_KEY_ID_LENGTH = len(KEY_ID_PREFIX) + 32
_IDS_IN_MESSAGES = 10  # an envelope may have hundreds of recipients; messages stay one readable line


class Envelope(TypedDict):
    """A sealed envelope as stored in a document (JSON-safe)."""

    v: int
    alg: str
    ciphertext: str
    recipients: dict[str, str]


Recipients: TypeAlias = Mapping[str, PublicKey] | Iterable[PublicKey]
"""Public keys to seal for; a Mapping's keys are labels (server names) used only in messages."""


def seal(plaintext: bytes, recipients: Recipients) -> Envelope:
    """Encrypt ``plaintext`` under a fresh data key and seal that key for every recipient.

    The index is always the key id computed from each public key, never a caller-supplied one. The
    same public key given twice is sealed once. At least one recipient is required.
    """
    targets = _recipients_by_key_id(recipients)
    if not targets:
        raise SealingError("an envelope needs at least one recipient")
    data_key = nacl.utils.random(_DATA_KEY_SIZE)
    ciphertext = bytes(SecretBox(data_key).encrypt(bytes(plaintext)))
    return _envelope(ciphertext, _seal_data_key(data_key, targets))


def open_envelope(envelope: Mapping[str, object], host_key: HostKey | Sequence[HostKey]) -> bytes:
    """Return the plaintext, or raise; never returns partial output.

    ``host_key`` may be a list (the current key first, then keys kept from rotation): the first one the
    envelope is sealed for is used. Raises UnsupportedEnvelopeVersion, NotARecipient or TamperedEnvelope.
    """
    parsed = _parse(envelope)
    data_key = _open_data_key(parsed, _as_key_list(host_key))
    return _decrypt(parsed.ciphertext, data_key)


def add_recipients(
    envelope: Mapping[str, object], opener: HostKey | Sequence[HostKey], new_recipients: Recipients
) -> Envelope:
    """Seal the envelope's existing data key for more recipients; the ciphertext stays byte-identical.

    ``opener`` (normally the certmgr, which is always a recipient; a list as in ``open_envelope``) opens
    the data key; the ciphertext is authenticated with it before anything is sealed, so a tampered
    envelope is never spread further. Recipients already present keep their entry. Returns a new
    envelope; the input is not modified.
    """
    parsed = _parse(envelope)
    data_key = _open_data_key(parsed, _as_key_list(opener))
    _decrypt(parsed.ciphertext, data_key)
    sealed = {kid: encode_base64(blob) for kid, blob in parsed.recipients.items()}
    targets = _recipients_by_key_id(new_recipients)
    sealed.update(_seal_data_key(data_key, {k: t for k, t in targets.items() if k not in sealed}))
    return _envelope(parsed.ciphertext, sealed)


def validate_envelope(envelope: object) -> None:
    """Check an envelope's structure without opening it (for document validation).

    Raises UnsupportedEnvelopeVersion or TamperedEnvelope exactly as ``open_envelope`` would.
    """
    _parse(envelope)


def envelope_key_ids(envelope: object) -> frozenset[str]:
    """The key ids an envelope is sealed for (validates its structure first)."""
    return frozenset(_parse(envelope).recipients)


def seal_private_key_pem(pem: bytes, recipients: Recipients) -> Envelope:
    """``seal`` for a TLS private key: ``pem`` must be exactly one unencrypted PEM private key."""
    _check_private_key_pem(pem, "refusing to seal it")
    return seal(pem, recipients)


def open_private_key_pem(envelope: Mapping[str, object], host_key: HostKey | Sequence[HostKey]) -> bytes:
    """``open_envelope`` for a TLS private key; also checks that what it holds is a PEM private key."""
    pem = open_envelope(envelope, host_key)
    _check_private_key_pem(pem, "the envelope holds something else")
    return pem


# --- re-seal or re-key -------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """Someone who should be able to open a credential's key: a server with access, or the certmgr.

    ``previous_key_ids`` are keys this holder rotated away from: envelopes sealed to them are not
    exposed to anyone new, so they are tolerated until the next re-key or renewal.
    """

    name: str
    key_id: str
    previous_key_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ResealPlan:
    """What the certmgr must do to an envelope so that exactly the wanted holders can open it.

    ``add``: key ids to seal the existing data key for (``add_recipients``).
    ``removed``: key ids that can open it but belong to no holder: the secret counts as exposed.
    ``retired``: old keys of current holders (rotation); harmless, they vanish at the next re-key.
    ``needs_rekey``: a new private key must be made (and the certificate re-issued); ``reason`` says why.
    """

    add: frozenset[str]
    removed: frozenset[str]
    retired: frozenset[str]
    needs_rekey: bool
    reason: str


def plan_reseal(
    current_key_ids: Iterable[str],
    holders: Iterable[Holder],
    *,
    known_names: Mapping[str, str] | None = None,
) -> ResealPlan:
    """Compare who can open an envelope (``current_key_ids``) with who should (``holders``).

    ``holders`` must include the certmgr. ``known_names`` maps other key ids to server names, so the
    reason can say whose access was lost (e.g. from every ``server:`` document). Pure: no I/O.
    """
    holder_list = list(holders)
    current = frozenset(current_key_ids)
    wanted = {h.key_id: h.name for h in holder_list}
    previous = {kid: h.name for h in holder_list for kid in h.previous_key_ids if kid not in wanted}
    add = frozenset(wanted) - current
    retired = (current - frozenset(wanted)) & frozenset(previous)
    removed = current - frozenset(wanted) - retired
    names = dict(known_names or {})
    if removed:
        lost = [
            f'server "{names[kid]}" lost access (key {kid})'
            if kid in names
            else f"unknown key {kid} can open it"
            for kid in sorted(removed)
        ]
        subject = "it" if len(removed) == 1 else "they"
        reason = "; ".join(lost) + f"; the key {subject} could open must be replaced"
    elif add:
        reason = "re-seal for " + ", ".join(f'server "{wanted[kid]}" (key {kid})' for kid in sorted(add))
    else:
        reason = "recipients are up to date"
    return ResealPlan(add=add, removed=removed, retired=retired, needs_rekey=bool(removed), reason=reason)


# --- internals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    ciphertext: bytes
    recipients: dict[str, bytes]


def _parse(envelope: object) -> _Parsed:
    """Decode and check an envelope's structure; every failure is one of our exceptions."""
    if not isinstance(envelope, Mapping):
        raise TamperedEnvelope(f"an envelope is a JSON object, got {type(envelope).__name__}")
    if "v" not in envelope:
        raise UnsupportedEnvelopeVersion(
            "the envelope has no format version ('v'): it is not a certstore envelope or it was damaged",
            version=None,
        )
    version = envelope["v"]
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise UnsupportedEnvelopeVersion(
            f"the envelope has format version {version!r}; this certstore opens version "
            f"{ENVELOPE_VERSION} only: upgrade certstore on this host",
            version=version,
        )
    unexpected = sorted(str(name) for name in envelope if name not in _FIELDS)
    if unexpected:
        raise TamperedEnvelope(f"the envelope has unexpected fields: {', '.join(unexpected)}")
    missing = sorted(_FIELDS - set(envelope))
    if missing:
        raise TamperedEnvelope(f"the envelope is missing fields: {', '.join(missing)}")
    if envelope["alg"] != ALGORITHM:
        raise TamperedEnvelope(f"a version 1 envelope must say alg {ALGORITHM!r}")
    ciphertext = _decode_field(envelope["ciphertext"], "ciphertext")
    if len(ciphertext) < _MIN_CIPHERTEXT_SIZE:
        raise TamperedEnvelope(f"the ciphertext is truncated ({len(ciphertext)} bytes)")
    index = envelope["recipients"]
    if not isinstance(index, Mapping) or not index:
        raise TamperedEnvelope("the envelope's recipients must be a non-empty JSON object")
    recipients: dict[str, bytes] = {}
    for kid, value in index.items():
        if not _is_key_id(kid):
            raise TamperedEnvelope("the envelope's recipients contain something that is not a key id")
        sealed = _decode_field(value, f"the sealed data key for {kid}")
        if len(sealed) != _SEALED_KEY_SIZE:
            raise TamperedEnvelope(
                f"the sealed data key for {kid} has the wrong length ({len(sealed)} bytes)"
            )
        recipients[kid] = sealed
    return _Parsed(ciphertext=ciphertext, recipients=recipients)


def _envelope(ciphertext: bytes, sealed_keys: dict[str, str]) -> Envelope:
    return {
        "v": ENVELOPE_VERSION,
        "alg": ALGORITHM,
        "ciphertext": encode_base64(ciphertext),
        "recipients": sealed_keys,
    }


def _decode_field(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TamperedEnvelope(f"{what} must be a base64 string, got {type(value).__name__}")
    try:
        return decode_base64(value)
    except ValueError as exc:
        raise TamperedEnvelope(f"{what} is {exc}") from None


def _is_key_id(value: object) -> bool:
    if not isinstance(value, str) or len(value) != _KEY_ID_LENGTH or not value.startswith(KEY_ID_PREFIX):
        return False
    return all(c in "0123456789abcdef" for c in value[len(KEY_ID_PREFIX) :])


def _as_key_list(host_key: HostKey | Sequence[HostKey]) -> list[HostKey]:
    keys = [host_key] if isinstance(host_key, HostKey) else list(host_key)
    if not keys:
        raise SealingError("no host key given to open the envelope with")
    return keys


def _open_data_key(parsed: _Parsed, keys: Sequence[HostKey]) -> bytes:
    host_key = next((k for k in keys if k.key_id in parsed.recipients), None)
    if host_key is None:
        raise NotARecipient(
            f"the envelope is not sealed for key {_list_ids([k.key_id for k in keys])}; "
            f"it is sealed for {_list_ids(parsed.recipients)}",
            key_id=keys[0].key_id,
        )
    try:
        data_key = SealedBox(host_key.private_key).decrypt(parsed.recipients[host_key.key_id])
    except nacl.exceptions.CryptoError:
        raise TamperedEnvelope(
            f"the sealed data key for {host_key.key_id} failed authentication: the envelope was altered"
        ) from None
    if len(data_key) != _DATA_KEY_SIZE:
        raise TamperedEnvelope(f"the data key sealed for {host_key.key_id} has the wrong length")
    return bytes(data_key)


def _decrypt(ciphertext: bytes, data_key: bytes) -> bytes:
    try:
        return bytes(SecretBox(data_key).decrypt(ciphertext))
    except nacl.exceptions.CryptoError:
        raise TamperedEnvelope("the ciphertext failed authentication: the envelope was altered") from None


def _recipients_by_key_id(recipients: Recipients) -> dict[str, tuple[str, PublicKey]]:
    """Key id → (label for messages, public key); duplicates of one key collapse into one entry."""
    pairs: list[tuple[str, object]]
    if isinstance(recipients, Mapping):
        pairs = list(recipients.items())
    else:
        pairs = [(f"#{number}", public_key) for number, public_key in enumerate(recipients)]
    targets: dict[str, tuple[str, PublicKey]] = {}
    for label, public_key in pairs:
        if not isinstance(public_key, PublicKey):
            raise SealingError(f"recipient {label} is a {type(public_key).__name__}, not an X25519 PublicKey")
        targets.setdefault(key_id(public_key), (label, public_key))
    return targets


def _seal_data_key(data_key: bytes, targets: Mapping[str, tuple[str, PublicKey]]) -> dict[str, str]:
    sealed: dict[str, str] = {}
    for kid, (label, public_key) in targets.items():
        try:
            sealed[kid] = encode_base64(bytes(SealedBox(public_key).encrypt(data_key)))
        except nacl.exceptions.CryptoError:
            # libsodium refuses low-order points; public_key_from_b64 catches those earlier
            raise SealingError(f"cannot seal for {label} ({kid}): not a usable X25519 public key") from None
    return sealed


def _list_ids(ids: Iterable[str]) -> str:
    ordered = sorted(ids)
    shown = ", ".join(ordered[:_IDS_IN_MESSAGES])
    if len(ordered) > _IDS_IN_MESSAGES:
        shown += f", … ({len(ordered)} in all)"
    return shown


def _check_private_key_pem(pem: bytes, consequence: str) -> None:
    """Raise SealingError unless ``pem`` is one unencrypted PEM private key; messages never quote it."""
    if not isinstance(pem, bytes):
        raise SealingError(f"a PEM private key is bytes, got {type(pem).__name__}; {consequence}")
    blocks = pem.count(b"-----BEGIN ")
    if blocks != 1:
        raise SealingError(f"expected exactly one PEM block, found {blocks}; {consequence}")
    try:
        load_pem_private_key(pem, password=None)
    except TypeError:
        raise SealingError(f"the PEM private key is password-protected; {consequence}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SealingError(f"not a PEM private key this certstore can load; {consequence}") from None
