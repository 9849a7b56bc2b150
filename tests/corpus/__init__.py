"""The shared corpus of good and bad documents, each with the verdict both validators must reach.

Used by tests/test_documents.py (the Python models), tests/test_design.py (validate_doc_update.js in
Node) and tests/integration/test_validate_doc_update.py (the design document inside a real database).
A bad case names the field the refusal must point at (``_id`` for a bad id, a dotted path for a
private key). Good documents are in the canonical form ``to_doc()`` writes, so they also round-trip.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

REMOVE = object()

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
THUMBPRINT = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
SEALED = {"v": 1, "alg": "secretbox+sealedbox", "ciphertext": "AAAA", "recipients": {"k1": "BBBB"}}
X25519 = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
CHAIN = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
RSA_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n"
PKCS8_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAg\n-----END PRIVATE KEY-----\n"


@dataclass(frozen=True)
class Case:
    """One document and the verdict: ``ok``, or refused pointing at ``field``."""

    label: str
    doc: dict[str, Any]
    ok: bool
    field: str | None = None
    private_key: bool = False

    @property
    def doc_id(self) -> str:
        return str(self.doc.get("_id"))


def variant(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with fields replaced (``REMOVE`` deletes one)."""
    doc = copy.deepcopy(base)
    for key, value in changes.items():
        if value is REMOVE:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


SETTINGS = {
    "_id": "settings",
    "type": "settings",
    "default_account": "letsencrypt",
    "default_key_type": "ecdsa-p384",
    "default_challenge": "dns-01",
    "renew_before_days": 30,
    "notify": ["mailto:pki@example.com", "https://hooks.example.com/certstore"],
}
ACCOUNT = {
    "_id": "account:letsencrypt",
    "type": "acme_account",
    "directory_url": "https://acme-v02.api.letsencrypt.org/directory",
    "contact": ["mailto:pki@example.com"],
    "tos_agreed": True,
    "eab_kid": "kid-123",
    "sealed_eab_hmac": SEALED,
}
ACCOUNT_STATE = {
    "_id": "account:letsencrypt:state",
    "type": "acme_account_state",
    "account_url": "https://acme-v02.api.letsencrypt.org/acme/acct/123",
    "sealed_key": SEALED,
    "registered_at": "2026-01-31T12:00:00Z",
    "directory_url": "https://acme-v02.api.letsencrypt.org/directory",
}
DNS = {
    "_id": "dns:bind",
    "type": "dns_provider",
    "kind": "rfc2136",
    "zones": ["example.com", "xn--bcher-kva.example"],
    "options": {"server": "127.0.0.1", "port": 53, "tsig_key_name": "certstore."},
    "sealed_credentials": SEALED,
}
SERVER = {
    "_id": "server:web1",
    "type": "server",
    "public_key": X25519,
    "key_id": "x25519:300c9c9603b92a4b39ed3958bf924011",
    "roles": ["agent", "certmgr"],
    "heartbeat": "2026-02-01T08:00:00.250000Z",
    "agent_version": "0.1.0",
    "responder_url": "http://web1.example.com:8402",
}
CREDENTIAL = {
    "_id": "credential:web",
    "type": "tls_credential",
    "hostnames": ["www.example.com", "example.com", "xn--bcher-kva.example"],
    "provider": "acme",
    "challenge": "auto",
    "servers": ["web1", "web2"],
}
CREDENTIAL_FULL = {
    "_id": "credential:wild",
    "type": "tls_credential",
    "hostnames": ["*.example.com", "example.com"],
    "provider": "acme",
    "account": "letsencrypt",
    "challenge": "dns-01",
    "key_type": "rsa-3072",
    "servers": ["web1"],
    "keyfile": "example.com.kyr",
    "reload_hook": "nginx",
    "profile": "tlsserver",
    "live_check": "localhost:443",
    "actions": {
        "renew": "2026-03-01T00:00:00Z",
        "revoke": {"at": "2026-03-02T00:00:00Z", "reason": "keyCompromise"},
        "rekey": "2026-03-03T00:00:00.500000Z",
    },
}
STATE = {
    "_id": "credential:web:state",
    "type": "tls_credential_state",
    "status": "issued",
    "status_message": "issued by Pebble",
    "chain_pem": CHAIN,
    "not_before": "2026-01-01T00:00:00Z",
    "not_after": "2026-04-01T00:00:00Z",
    "serial": "4a0b3c",
    "fingerprint_sha256": "ab" * 32,
    "sealed_key": SEALED,
    "recipients": ["web1", "web2", "certmgr1"],
    "handled_actions": {"renew": "2026-03-01T00:00:00Z"},
    "next_renewal": "2026-03-01T00:00:00Z",
    "error_history": [{"at": "2026-01-01T00:00:00Z", "message": "rate limited"}],
    "rekey_reason": "web3 removed from servers",
    "hostnames": ["www.example.com", "example.com", "xn--bcher-kva.example"],
    "key_type": "ecdsa-p256",
    "account": "letsencrypt",
    "request_rev": "3-9c1f0a5e2b7d4c6a8e0f1b2c3d4e5f60",
    "failures": 0,
}
CHALLENGE = {
    "_id": f"challenge:{TOKEN}",
    "type": "acme_challenge",
    "key_authorization": f"{TOKEN}.{THUMBPRINT}",
    "hostnames": ["www.example.com"],
    "expires": "2026-01-01T01:00:00Z",
    "credential": "web",
}
DEPLOYMENT = {
    "_id": "deploy:web1:web",
    "type": "deployment",
    "serial": "4a0b3c",
    "paths": ["/var/lib/certstore/keys/web/v7/chain.pem", "/var/lib/certstore/keys/web/v7/key.pem"],
    "deployed_at": "2026-01-01T00:05:00Z",
    "hook_result": {"ok": True, "at": "2026-01-01T00:05:01Z"},
    "live_check": {"ok": False, "at": "2026-01-01T00:05:02Z", "message": "still serving serial 4a0b3b"},
}
LEASE = {
    "_id": "lease:certmgr",
    "type": "lease",
    "holder": "certmgr1",
    "acquired_at": "2026-01-01T00:00:00Z",
    "expires": "2026-01-01T00:01:00Z",
}


def _good(label: str, doc: dict[str, Any]) -> Case:
    return Case(label, doc, ok=True)


def _bad(label: str, doc: dict[str, Any], field: str) -> Case:
    return Case(label, doc, ok=False, field=field)


def _key(label: str, doc: dict[str, Any], field: str) -> Case:
    return Case(label, doc, ok=False, field=field, private_key=True)


def _hostnames(*names: Any) -> dict[str, Any]:
    return variant(CREDENTIAL, hostnames=list(names))


CASES: list[Case] = [
    # --- good documents, one or more per type ---
    _good("settings: minimal", {"_id": "settings", "type": "settings"}),
    _good("settings: full", SETTINGS),
    _good("account: with EAB", ACCOUNT),
    _good("account state", ACCOUNT_STATE),
    _good("dns provider", DNS),
    _good("server: full", SERVER),
    _good("server: pre-created by an admin, no key yet", {"_id": "server:web2", "type": "server"}),
    _good("credential: typical", CREDENTIAL),
    _good("credential: every field, wildcard with dns-01", CREDENTIAL_FULL),
    _good("credential: 100 host names", _hostnames(*[f"h{i}.example.com" for i in range(100)])),
    _good("credential: unknown top-level field kept", variant(CREDENTIAL, note_for_admins="ask Bob")),
    _good("credential: 63-octet label", _hostnames("a" * 63 + ".example.com")),
    _good("credential: lowercase armour is not PEM", variant(CREDENTIAL, note="-----begin private key-----")),
    _good("credential: a public key is fine", variant(CREDENTIAL, note="-----BEGIN PUBLIC KEY-----")),
    _good("credential state: issued", STATE),
    _good(
        "credential state: pending, minimal",
        {"_id": "credential:web:state", "type": "tls_credential_state", "status": "pending"},
    ),
    _good("credential state: envelope version 1.0", variant(STATE, sealed_key={**SEALED, "v": 1.0})),
    _good("challenge", CHALLENGE),
    _good("deployment", DEPLOYMENT),
    _good("lease", LEASE),
    _good(
        "deletion skips field rules",
        {"_id": "credential:web", "_rev": "1-abc", "_deleted": True, "hostnames": "garbage"},
    ),
    # --- ids and types ---
    _bad("id: not a certstore id", {"_id": "foo", "type": "settings"}, "_id"),
    _bad(
        "id: path traversal in a name",
        {"_id": "credential:../etc", "type": "tls_credential", "hostnames": ["a.example.com"]},
        "_id",
    ),
    _bad("id: uppercase name", variant(CREDENTIAL, _id="credential:Web"), "_id"),
    _bad("id: colon inside a name", variant(CREDENTIAL, _id="credential:a:b"), "_id"),
    _bad("id: deploy without credential", variant(DEPLOYMENT, _id="deploy:web1"), "_id"),
    _bad("id: challenge token too short", variant(CHALLENGE, _id="challenge:short"), "_id"),
    _bad("id: non-ASCII name", variant(CREDENTIAL, _id="credential:bücher"), "_id"),
    _bad("type: missing", variant(CREDENTIAL, type=REMOVE), "type"),
    _bad("type: unknown", variant(CREDENTIAL, type="bogus"), "type"),
    _bad("type: request type on a state id", variant(CREDENTIAL, _id="credential:web:state"), "type"),
    _bad("reserved _ field", variant(CREDENTIAL, _secret="x"), "_secret"),
    # --- host names ---
    _bad("hostname: wildcard inside a label", _hostnames("a.example.com", "a*.example.com"), "hostnames[1]"),
    _bad("hostname: two wildcards", _hostnames("*.*.example.com"), "hostnames[0]"),
    _bad("hostname: wildcard not left-most", _hostnames("x.*.example.com"), "hostnames[0]"),
    _bad("hostname: bare wildcard", _hostnames("*"), "hostnames[0]"),
    _bad("hostname: wildcard on a TLD", _hostnames("*.com"), "hostnames[0]"),
    _bad("hostname: Unicode must be punycode", _hostnames("bücher.example"), "hostnames[0]"),
    _bad("hostname: uppercase", _hostnames("WWW.example.com"), "hostnames[0]"),
    _bad("hostname: trailing dot", _hostnames("www.example.com."), "hostnames[0]"),
    _bad("hostname: IPv4", _hostnames("192.0.2.1"), "hostnames[0]"),
    _bad("hostname: IPv6", _hostnames("2001:db8::1"), "hostnames[0]"),
    _bad("hostname: one label", _hostnames("localhost"), "hostnames[0]"),
    _bad("hostname: 64-octet label", _hostnames("a" * 64 + ".example.com"), "hostnames[0]"),
    _bad("hostname: longer than 253", _hostnames(".".join(["a" * 62] * 4) + ".com"), "hostnames[0]"),
    _bad("hostname: leading hyphen", _hostnames("-www.example.com"), "hostnames[0]"),
    _bad("hostname: -- in 3rd/4th position", _hostnames("ab--cd.example.com"), "hostnames[0]"),
    _bad("hostname: underscore", _hostnames("_acme.example.com"), "hostnames[0]"),
    _bad("hostname: empty label", _hostnames("www..example.com"), "hostnames[0]"),
    _bad("hostname: path traversal", _hostnames("../example.com"), "hostnames[0]"),
    _bad("hostname: NUL", _hostnames("www.example.com\u0000.evil"), "hostnames[0]"),
    _bad("hostname: all-digit last label", _hostnames("host.123"), "hostnames[0]"),
    _bad("hostname: not a string", _hostnames("a.example.com", 7), "hostnames[1]"),
    _bad("hostnames: empty list", _hostnames(), "hostnames"),
    _bad("hostnames: 101 names", _hostnames(*[f"h{i}.example.com" for i in range(101)]), "hostnames"),
    _bad(
        "hostnames: duplicate", _hostnames("a.example.com", "b.example.com", "a.example.com"), "hostnames[2]"
    ),
    _bad("hostnames: missing", variant(CREDENTIAL, hostnames=REMOVE), "hostnames"),
    _bad("hostnames: a string, not a list", variant(CREDENTIAL, hostnames="a.example.com"), "hostnames"),
    _bad("hostname: wildcard with http-01", variant(CREDENTIAL_FULL, challenge="http-01"), "hostnames[0]"),
    # --- other credential fields ---
    _bad("key type: unknown", variant(CREDENTIAL, key_type="ed25519"), "key_type"),
    _bad("provider: unknown", variant(CREDENTIAL, provider="venafi"), "provider"),
    _bad("challenge: unknown", variant(CREDENTIAL, challenge="tls-alpn-01"), "challenge"),
    _bad("servers: uppercase", variant(CREDENTIAL, servers=["Web1"]), "servers[0]"),
    _bad("servers: traversal", variant(CREDENTIAL, servers=["web1", "../web2"]), "servers[1]"),
    _bad("servers: duplicate", variant(CREDENTIAL, servers=["web1", "web1"]), "servers[1]"),
    _bad("account: bad name", variant(CREDENTIAL, account="Lets Encrypt"), "account"),
    _bad("keyfile: traversal", variant(CREDENTIAL, keyfile="../etc/passwd"), "keyfile"),
    _bad("keyfile: slash", variant(CREDENTIAL, keyfile="a/b"), "keyfile"),
    _bad("keyfile: backslash", variant(CREDENTIAL, keyfile="a\\b"), "keyfile"),
    _bad("keyfile: dot file", variant(CREDENTIAL, keyfile=".hidden"), "keyfile"),
    _bad("keyfile: ..", variant(CREDENTIAL, keyfile="a..b"), "keyfile"),
    _bad("keyfile: too long", variant(CREDENTIAL, keyfile="k" * 65), "keyfile"),
    _bad(
        "reload hook: a command, not a tag",
        variant(CREDENTIAL, reload_hook="systemctl reload nginx"),
        "reload_hook",
    ),
    _bad("live check: no port", variant(CREDENTIAL, live_check="localhost"), "live_check"),
    _bad("live check: port out of range", variant(CREDENTIAL, live_check="localhost:70000"), "live_check"),
    _bad(
        "actions: unknown action",
        variant(CREDENTIAL, actions={"pause": "2026-01-01T00:00:00Z"}),
        "actions.pause",
    ),
    _bad("actions: not a timestamp", variant(CREDENTIAL, actions={"renew": "yesterday"}), "actions.renew"),
    _bad(
        "actions: offset instead of Z",
        variant(CREDENTIAL, actions={"renew": "2026-01-01T00:00:00+01:00"}),
        "actions.renew",
    ),
    _bad(
        "actions: 30 February",
        variant(CREDENTIAL, actions={"rekey": "2026-02-30T00:00:00Z"}),
        "actions.rekey",
    ),
    _bad(
        "actions: revoke reason unknown",
        variant(CREDENTIAL, actions={"revoke": {"at": "2026-01-01T00:00:00Z", "reason": "oops"}}),
        "actions.revoke.reason",
    ),
    _bad(
        "actions: revoke without at",
        variant(CREDENTIAL, actions={"revoke": {"reason": "superseded"}}),
        "actions.revoke.at",
    ),
    _bad("actions: not an object", variant(CREDENTIAL, actions=["renew"]), "actions"),
    # --- plaintext private keys, anywhere ---
    _key("private key: RSA in an extra field", variant(CREDENTIAL, note=RSA_KEY), "note"),
    _key(
        "private key: PKCS#8 nested in a list",
        variant(DNS, options={"keys": ["x", PKCS8_KEY]}),
        "options.keys[1]",
    ),
    _key("private key: as an object key", variant(DNS, options={PKCS8_KEY: 1}), "options.<key>"),
    _key(
        "private key: header split by CRLF",
        variant(CREDENTIAL, note="-----BEGIN EC\r\nPRIVATE KEY-----"),
        "note",
    ),
    _key(
        "private key: OpenSSH",
        variant(SERVER, agent_version="-----BEGIN OPENSSH PRIVATE KEY-----"),
        "agent_version",
    ),
    _key(
        "private key: encrypted PKCS#8",
        variant(STATE, chain_pem=CHAIN + "-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "chain_pem",
    ),
    _key(
        "private key: DSA inside a sealed field",
        variant(STATE, sealed_key={"v": 1, "pem": "-----BEGIN DSA PRIVATE KEY"}),
        "sealed_key.pem",
    ),
    _key(
        "private key: in a deletion",
        {"_id": "credential:web", "_rev": "1-abc", "_deleted": True, "key": RSA_KEY},
        "key",
    ),
    # --- certmgr documents ---
    _bad("state: unknown status", variant(STATE, status="done"), "status"),
    _bad("state: issued without chain", variant(STATE, chain_pem=REMOVE), "chain_pem"),
    _bad("state: not_after before not_before", variant(STATE, not_after="2025-01-01T00:00:00Z"), "not_after"),
    _bad("state: serial in uppercase", variant(STATE, serial="4A0B3C"), "serial"),
    _bad("state: short fingerprint", variant(STATE, fingerprint_sha256="abcd"), "fingerprint_sha256"),
    _bad(
        "state: sealed key without version", variant(STATE, sealed_key={"ciphertext": "AAAA"}), "sealed_key"
    ),
    _bad("state: sealed key version is a string", variant(STATE, sealed_key={"v": "1"}), "sealed_key"),
    _bad("state: sealed key without recipients", variant(STATE, recipients=[]), "recipients"),
    _bad(
        "state: 21 errors in the history",
        variant(STATE, error_history=[{"at": "2026-01-01T00:00:00Z", "message": "x"}] * 21),
        "error_history",
    ),
    _bad(
        "state: error entry with an unknown field",
        variant(STATE, error_history=[{"at": "2026-01-01T00:00:00Z", "message": "x", "code": 1}]),
        "error_history[0].code",
    ),
    _bad(
        "state: handled action unknown",
        variant(STATE, handled_actions={"pause": "2026-01-01T00:00:00Z"}),
        "handled_actions.pause",
    ),
    _bad("state: negative failure count", variant(STATE, failures=-1), "failures"),
    _bad("state: issued for a Unicode name", variant(STATE, hostnames=["bücher.example"]), "hostnames[0]"),
    _bad("state: retry time not a timestamp", variant(STATE, next_attempt="soon"), "next_attempt"),
    _bad("state: year before 1970", variant(STATE, next_renewal="1969-12-31T23:59:59Z"), "next_renewal"),
    _bad(
        "account state: http account URL",
        variant(ACCOUNT_STATE, account_url="http://ca.example/acct/1"),
        "account_url",
    ),
    _bad(
        "challenge: key authorization for another token",
        variant(CHALLENGE, key_authorization=f"{'x' * 43}.{THUMBPRINT}"),
        "key_authorization",
    ),
    _bad("challenge: wildcard name", variant(CHALLENGE, hostnames=["*.example.com"]), "hostnames[0]"),
    _bad("challenge: no expiry", variant(CHALLENGE, expires=REMOVE), "expires"),
    _bad("lease: expires before acquired", variant(LEASE, expires="2025-12-31T00:00:00Z"), "expires"),
    _bad("lease: no holder", variant(LEASE, holder=REMOVE), "holder"),
    # --- admin documents ---
    _bad(
        "account: plain http directory",
        variant(ACCOUNT, directory_url="http://ca.example/dir"),
        "directory_url",
    ),
    _bad("account: EAB kid without HMAC", variant(ACCOUNT, sealed_eab_hmac=REMOVE), "sealed_eab_hmac"),
    _bad("account: contact without mailto", variant(ACCOUNT, contact=["pki@example.com"]), "contact[0]"),
    _bad("account: tos_agreed as a string", variant(ACCOUNT, tos_agreed="yes"), "tos_agreed"),
    _bad("dns: unknown kind", variant(DNS, kind="route53"), "kind"),
    _bad("dns: wildcard zone", variant(DNS, zones=["*.example.com"]), "zones[0]"),
    _bad("settings: renewal window 0 days", variant(SETTINGS, renew_before_days=0), "renew_before_days"),
    _bad("settings: renewal window 1.5 days", variant(SETTINGS, renew_before_days=1.5), "renew_before_days"),
    _bad("settings: renewal window true", variant(SETTINGS, renew_before_days=True), "renew_before_days"),
    _bad("settings: notify target", variant(SETTINGS, notify=["pager"]), "notify[0]"),
    # --- agent documents ---
    _bad(
        "server: public key of 31 bytes",
        variant(SERVER, public_key="hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTg=="),
        "public_key",
    ),
    _bad("server: key id in another format", variant(SERVER, key_id="hSDwCYkwp1R0i33c"), "key_id"),
    _bad("server: key id without public key", variant(SERVER, public_key=REMOVE), "public_key"),
    _bad("server: ftp responder", variant(SERVER, responder_url="ftp://web1.example.com/"), "responder_url"),
    _bad("server: roles not a list", variant(SERVER, roles="agent"), "roles"),
    _bad("deployment: relative path", variant(DEPLOYMENT, paths=["keys/web.pem"]), "paths[0]"),
    _bad("deployment: .. in a path", variant(DEPLOYMENT, paths=["/var/lib/../../etc/shadow"]), "paths[0]"),
    _bad(
        "deployment: hook result without ok",
        variant(DEPLOYMENT, hook_result={"at": "2026-01-01T00:05:01Z"}),
        "hook_result.ok",
    ),
]
