"""docs/templates/*.json, the documents admins paste into Fauxton, and the messages docs/fauxton.md quotes.

Every template must pass the Python models and validate_doc_update.js (in Node, as tests/test_design.py
runs it) exactly as it stands, carry no secret, and configure its DNS provider plugin with options the
plugin accepts. The refusals docs/fauxton.md quotes must be what the database really answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_design import js_verdicts

from agent.dns import provider_for
from store import documents
from store.documents import DnsProvider, validate_document

TEMPLATES = Path(__file__).resolve().parent.parent / "docs" / "templates"
FAUXTON_DOC = TEMPLATES.parent / "fauxton.md"
EXPECTED = {
    "credential.json": documents.TlsCredential,
    "account.json": documents.AcmeAccount,
    "settings.json": documents.Settings,
    "dns-rfc2136.json": documents.DnsProvider,
    "dns-lexicon.json": documents.DnsProvider,
}
# What each DNS provider would find in its sealed credentials (never in the template itself).
FAKE_SECRETS = {"rfc2136": {"tsig_secret": "c2VjcmV0LXRzaWcta2V5"}, "lexicon": {"auth_token": "token"}}

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((TEMPLATES / name).read_text())
    return doc


def test_the_templates_are_the_documented_set() -> None:
    assert {path.name for path in TEMPLATES.glob("*.json")} == set(EXPECTED)
    text = FAUXTON_DOC.read_text()
    for name in EXPECTED:
        assert f"`{name}`" in text, f"docs/fauxton.md does not explain {name}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_passes_the_python_models(name: str) -> None:
    model = validate_document(load(name))
    assert isinstance(model, EXPECTED[name])
    assert model.extra == {}, f"fields the model does not know: {sorted(model.extra)}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_is_pasteable(name: str) -> None:
    doc = load(name)
    assert "_rev" not in doc, "a pasted _rev would be refused as a conflict"
    assert not [key for key in doc if key.startswith("sealed_")], (
        "secrets are sealed by the CLI, never pasted"
    )
    assert (TEMPLATES / name).read_text().endswith("}\n")


@needs_node
def test_templates_pass_validate_doc_update() -> None:
    names = sorted(EXPECTED)
    verdicts = js_verdicts([load(name) for name in names])
    assert {name: verdict["verdict"] for name, verdict in zip(names, verdicts, strict=True)} == dict.fromkeys(
        names, "ok"
    ), verdicts


@pytest.mark.parametrize("name", ["dns-rfc2136.json", "dns-lexicon.json"])
def test_dns_template_options_configure_the_provider(name: str) -> None:
    model = DnsProvider.from_doc(load(name))
    if model.kind.value == "lexicon":
        pytest.importorskip("lexicon", reason="dns-lexicon is an optional dependency")
    provider = provider_for(
        model.kind.value, {"zones": model.zones, **model.options}, FAKE_SECRETS[model.kind.value]
    )
    assert provider.kind == model.kind.value


# The mistakes docs/fauxton.md shows, each with the reason it quotes after "Save failed:".
MISTAKES: list[dict[str, Any]] = [
    {
        "_id": "credential:shop",
        "type": "tls_credential",
        "hostnames": ["bücher.example.com"],
        "servers": ["web1"],
    },
    {
        "_id": "credential:shop",
        "type": "tls_credential",
        "hostnames": ["*.example.com"],
        "challenge": "http-01",
    },
    {
        "_id": "credential:shop",
        "type": "tls_credential",
        "hostnames": ["shop.example.com"],
        "actions": {"renw": "2026-12-04T00:00:00Z"},
    },
    {"_id": "credential:Shop", "type": "tls_credential", "hostnames": ["shop.example.com"]},
    {
        "_id": "credential:shop",
        "type": "tls_credential",
        "hostnames": ["shop.example.com"],
        "note": "-----BEGIN PRIVATE KEY-----\nMIIE",
    },
]


@needs_node
def test_the_refusals_fauxton_md_quotes_are_the_real_ones() -> None:
    text = FAUXTON_DOC.read_text()
    for doc, verdict in zip(MISTAKES, js_verdicts(MISTAKES), strict=True):
        assert verdict["verdict"] == "forbidden", doc
        assert f"`Save failed: {verdict['message']}`" in text, verdict["message"]
    server = {"name": "server-web1", "roles": ["certstore-server", "server:web1"]}
    (verdict,) = js_verdicts([MISTAKES[0] | {"hostnames": ["shop.example.com"]}], server)
    assert f"`Save failed: {verdict['message']}`" in text, verdict["message"]
