"""Keep a credential's sealed key in step with its "servers with access".

A server added to the list gets the same private key sealed for it (a re-seal: no new key, no new
certificate). A server removed from the list, or any key id in the envelope that belongs to nobody
with access any more, is exposure: the key must be replaced, so the state document is marked for
rekey with the reason, and the certmgr re-keys, re-issues and revokes the old certificate.

Rotating a host key also counts as exposure of what it could open: the old key file may still
exist, so the credentials it held are re-keyed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from nacl.public import PublicKey

from store.documents import Server, TlsCredential, TlsCredentialState
from store.errors import NotARecipient
from store.hostkey import HostKey, public_key_from_b64
from store.sealing import Holder, add_recipients, envelope_key_ids, plan_reseal

Outcome = Literal["unchanged", "resealed", "rekey"]


@dataclass(frozen=True)
class AccessChange:
    """What :func:`reconcile_access` did, and the servers it could not seal for (not enrolled)."""

    outcome: Outcome
    reason: str
    not_enrolled: tuple[str, ...] = ()


def wanted_holders(
    credential: TlsCredential, servers: Mapping[str, Server], certmgr_name: str
) -> tuple[dict[str, PublicKey], list[str]]:
    """Public keys of everyone who should open the key (the certmgr first), and who has no key yet."""
    keys: dict[str, PublicKey] = {}
    missing: list[str] = []
    for name in [certmgr_name, *credential.servers]:
        server = servers.get(name)
        if server is None or server.public_key is None:
            missing.append(name)
        elif name not in keys:
            keys[name] = public_key_from_b64(server.public_key)
    return keys, missing


def reconcile_access(
    state: TlsCredentialState,
    credential: TlsCredential,
    servers: Mapping[str, Server],
    certmgr_key: HostKey,
    certmgr_name: str,
) -> AccessChange:
    """Re-seal ``state.sealed_key`` for added servers, or mark it for rekey; changes ``state``."""
    if state.sealed_key is None:
        return AccessChange("unchanged", "no key sealed yet")
    keys, missing = wanted_holders(credential, servers, certmgr_name)
    holders = [Holder(name, servers[name].key_id or "") for name in keys]
    known = {s.key_id: s.name for s in servers.values() if s.key_id}
    plan = plan_reseal(envelope_key_ids(state.sealed_key), holders, known_names=known)
    if plan.needs_rekey:
        return _mark_rekey(state, plan.reason, missing)
    if not plan.add:
        return AccessChange("unchanged", plan.reason, tuple(missing))
    added = {name: key for name, key in keys.items() if servers[name].key_id in plan.add}
    try:
        state.sealed_key = dict(add_recipients(state.sealed_key, certmgr_key, added))
    except NotARecipient:
        reason = f"the certmgr's key {certmgr_key.key_id} cannot open the sealed key, so it cannot re-seal it"
        return _mark_rekey(state, reason, missing)
    state.recipients = sorted(keys)
    return AccessChange("resealed", plan.reason, tuple(missing))


def _mark_rekey(state: TlsCredentialState, reason: str, missing: list[str]) -> AccessChange:
    state.rekey_reason = reason
    state.status_message = f"re-key needed: {reason}"
    return AccessChange("rekey", reason, tuple(missing))
