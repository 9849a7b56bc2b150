"""The design document: built from design_docs/, plain ES5, and validate_doc_update.js agreeing with Python.

The JavaScript runs in Node through tests/js/run_validate.js (no server needed); the same corpus goes
through store.documents.validate_write and both verdicts must match, with the same message apart from
the normalised-form hint only Python can give (it knows IDNA).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from corpus import CASES, CREDENTIAL, CREDENTIAL_FULL, SERVER, STATE, Case, variant

from store import design, documents
from store.documents import validate_write
from store.errors import DesignDocError, ValidationError
from store.names import ChallengeKind, DnsKind, KeyType, Provider, RevocationReason, Status

HARNESS = Path(__file__).parent / "js" / "run_validate.js"
DESIGN_DIR = design.DESIGN_DOCS_DIR / "certstore"
JS_FILES = sorted(DESIGN_DIR.rglob("*.js"))
ADMIN = {"name": "admin", "roles": ["_admin"]}

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def run_node(request: dict[str, Any]) -> list[Any]:
    result = subprocess.run(
        ["node", str(HARNESS)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows: list[Any] = json.loads(result.stdout)
    return rows


def js_verdicts(
    docs: Sequence[dict[str, Any]], user_ctx: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    source = design.load_design_doc()["validate_doc_update"]
    cases = [{"doc": doc, "user_ctx": user_ctx or ADMIN} for doc in docs]
    return run_node({"validate": source, "cases": cases})


def py_verdict(doc: dict[str, Any]) -> dict[str, str]:
    try:
        validate_write(doc)
    except ValidationError as exc:
        return {"verdict": "forbidden", "message": str(exc)}
    return {"verdict": "ok", "message": ""}


def comparable(message: str) -> str:
    # Only Python can suggest the converted name; everything before that hint must be identical.
    return message.split("is not in normalised form")[0]


def assert_same(docs: Sequence[dict[str, Any]]) -> None:
    for doc, js in zip(docs, js_verdicts(docs), strict=True):
        py = py_verdict(doc)
        assert js["verdict"] != "crash", js["message"]
        assert (js["verdict"], comparable(js["message"])) == (py["verdict"], comparable(py["message"])), doc


# --- building the design document --------------------------------------------------------------


def test_load_design_doc_has_every_part() -> None:
    doc = design.load_design_doc()
    assert doc["_id"] == "_design/certstore"
    assert doc["language"] == "javascript"
    assert doc["validate_doc_update"].startswith("function")
    assert set(doc["views"]) == {
        "by_type",
        "credentials_by_expiry",
        "credentials_by_hostname",
        "credentials_by_server",
        "credentials_by_status",
    }
    assert doc["views"]["by_type"]["reduce"] == "_count"
    assert doc[design.VERSION_FIELD] == design.design_version(doc)


def test_version_changes_with_content_and_only_then(tmp_path: Path) -> None:
    shutil.copytree(design.DESIGN_DOCS_DIR, tmp_path / "dd")
    first = design.load_design_doc(tmp_path / "dd")
    assert design.load_design_doc(tmp_path / "dd") == first
    stored = {**first, "_rev": "3-abc"}
    assert not design.needs_update(stored, first)
    assert design.needs_update(None, first)
    map_file = tmp_path / "dd" / "certstore" / "views" / "by_type" / "map.js"
    map_file.write_text(map_file.read_text().replace("emit(doc.type, null)", "emit(doc.type, 1)"))
    second = design.load_design_doc(tmp_path / "dd")
    assert second[design.VERSION_FIELD] != first[design.VERSION_FIELD]
    assert design.needs_update(stored, second)
    hand_edited = {**stored, "validate_doc_update": "function (newDoc) {}"}
    assert design.needs_update(hand_edited, first)


def test_missing_or_bad_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(DesignDocError, match="no views directory"):
        design.load_design_doc(tmp_path)
    shutil.copytree(design.DESIGN_DOCS_DIR, tmp_path / "dd")
    vdu = tmp_path / "dd" / "certstore" / "validate_doc_update.js"
    vdu.write_text("// a comment first\n" + vdu.read_text())
    with pytest.raises(DesignDocError, match="must start with"):
        design.load_design_doc(tmp_path / "dd")
    vdu.unlink()
    with pytest.raises(DesignDocError, match="cannot read") as info:
        design.load_design_doc(tmp_path / "dd")
    assert info.value.path == str(vdu)


# --- ES5 only ----------------------------------------------------------------------------------

ES5_VIOLATIONS = {
    "let": re.compile(r"\blet\s"),
    "const": re.compile(r"\bconst\s"),
    "arrow function": re.compile(r"=>"),
    "template string": re.compile(r"`"),
    "Array.prototype.includes": re.compile(r"\.includes\("),
    "class": re.compile(r"\bclass\s"),
    "spread / rest": re.compile(r"\.\.\.[A-Za-z_\[]"),
    "for...of": re.compile(r"\bfor\s*\([^)]*\bof\b"),
    "default parameter": re.compile(r"function\s*[A-Za-z_]*\([^)]*="),
    "Object.assign / entries / values": re.compile(r"Object\.(assign|entries|values)\("),
    "String startsWith / endsWith / repeat / padStart": re.compile(
        r"\.(startsWith|endsWith|repeat|padStart)\("
    ),
}


def _code_only(source: str) -> str:
    # Drop comments and string literals, which may mention any of the above in prose.
    source = re.sub(r"//[^\n]*", "", source)
    return re.sub(r"'(?:[^'\\\n]|\\.)*'", "''", source)


@pytest.mark.parametrize("path", JS_FILES, ids=lambda path: str(path.relative_to(DESIGN_DIR)))
def test_javascript_is_plain_es5(path: Path) -> None:
    source = path.read_text()
    if path.name == "reduce.js" and source.startswith("_"):
        return  # a built-in reducer such as _count
    found = [name for name, pattern in ES5_VIOLATIONS.items() if pattern.search(_code_only(source))]
    assert found == [], f"{path}: not ES5: {found}"
    assert source.startswith("function"), "no comment may precede the function (ASI after return)"


def test_the_es5_scan_catches_each_violation() -> None:
    samples = [
        "let x = 1;",
        "const y = 2;",
        "f(a => a)",
        "`t`",
        "a.includes(b)",
        "class A {}",
        "f(...args)",
        "for (x of y) {}",
        "function f(a = 1) {}",
        "Object.assign({}, a)",
        "s.startsWith('a')",
    ]
    for sample, (name, pattern) in zip(samples, ES5_VIOLATIONS.items(), strict=True):
        assert pattern.search(_code_only(sample)), name


# --- Python and JavaScript give the same verdicts ----------------------------------------------


@needs_node
def test_corpus_verdicts_match_python() -> None:
    docs = [case.doc for case in CASES]
    assert_same(docs)
    for case, js in zip(CASES, js_verdicts(docs), strict=True):
        assert (js["verdict"] == "ok") == case.ok, case.label


@needs_node
def test_every_enum_value_is_accepted_by_both() -> None:
    docs = [variant(CREDENTIAL, key_type=key_type.value) for key_type in KeyType]
    docs += [variant(CREDENTIAL, provider=provider.value) for provider in Provider]
    docs += [variant(CREDENTIAL, challenge=kind.value) for kind in ChallengeKind]
    docs += [variant(STATE, status=status.value) for status in Status]
    docs += [
        variant(CREDENTIAL, actions={"revoke": {"at": "2026-01-01T00:00:00Z", "reason": reason.value}})
        for reason in RevocationReason
    ]
    assert all(js["verdict"] == "ok" for js in js_verdicts(docs))
    assert_same(docs)


HOSTILE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    1e300,
    "",
    " ",
    "\u0000",
    "../",
    "*.",
    "a" * 300,
    "Ü",
    "😀",
    "😀" * 1001,
    "2026-01-01T00:00:00Z",
    "web1",
    "*.example.com",
    "mailto:a@b",
    "https://x.example/",
    [],
    [None],
    ["web1"],
    ["a.example.com", "a.example.com"],
    {},
    {"v": 1},
    {"v": "1"},
    {"at": "2026-01-01T00:00:00Z"},
    {"ok": True, "at": "2026-01-01T00:00:00Z", "extra": 1},
    [{"at": "2026-01-01T00:00:00Z", "message": "m"}],
]


def _mutations(cases: Sequence[Case], count: int, seed: int) -> list[dict[str, Any]]:
    """Good corpus documents with one field replaced, removed or added, chosen at random (seeded)."""
    rng = random.Random(seed)
    goods = [case.doc for case in cases if case.ok and not case.doc.get("_deleted")]
    docs = []
    for _ in range(count):
        doc = rng.choice(goods)
        fields = [key for key in doc if key != "_id"] + ["unknown_field", "_unknown"]
        name = rng.choice(fields)
        value = rng.choice([*HOSTILE_VALUES, "REMOVE"])
        docs.append(variant(doc, **{name: None if value == "REMOVE" else value}))
    return docs


@needs_node
def test_random_mutations_get_the_same_verdict() -> None:
    """Hundreds of one-field mutations: JS never crashes and always agrees with Python."""
    assert_same(_mutations(CASES, 600, seed=20261204))


# --- roles -------------------------------------------------------------------------------------

ROLE_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("server admin writes a request", {"name": "root", "roles": ["_admin"]}, CREDENTIAL, "ok"),
    ("certstore-admin writes a request", {"name": "alice", "roles": ["certstore-admin"]}, CREDENTIAL, "ok"),
    ("certmgr writes a state", {"name": "cm", "roles": ["certstore-certmgr"]}, STATE, "ok"),
    (
        "certmgr may not write a request",
        {"name": "cm", "roles": ["certstore-certmgr"]},
        CREDENTIAL,
        "forbidden",
    ),
    ("server writes its own server doc", {"name": "web1", "roles": ["server:web1"]}, SERVER, "ok"),
    (
        "server writes its deploy doc",
        {"name": "web1", "roles": ["server:web1"]},
        {"_id": "deploy:web1:web", "type": "deployment"},
        "ok",
    ),
    ("server may not write another server", {"name": "web2", "roles": ["server:web2"]}, SERVER, "forbidden"),
    (
        "server may not write another's deploy doc",
        {"name": "web2", "roles": ["server:web2"]},
        {"_id": "deploy:web1:web", "type": "deployment"},
        "forbidden",
    ),
    ("server may not write a request", {"name": "web1", "roles": ["server:web1"]}, CREDENTIAL, "forbidden"),
    ("member without a role", {"name": "bob", "roles": []}, CREDENTIAL, "forbidden"),
    ("anonymous", {"name": None, "roles": []}, CREDENTIAL, "unauthorized"),
    ("admin party (pouchdb-server without admins)", {"name": None, "roles": ["_admin"]}, CREDENTIAL, "ok"),
    (
        "server deletes its deploy doc",
        {"name": "web1", "roles": ["server:web1"]},
        {"_id": "deploy:web1:web", "_rev": "1-a", "_deleted": True},
        "ok",
    ),
    (
        "server may not delete a request",
        {"name": "web1", "roles": ["server:web1"]},
        {"_id": "credential:web", "_rev": "1-a", "_deleted": True},
        "forbidden",
    ),
    (
        "role checks come before field checks",
        {"name": "web2", "roles": ["server:web2"]},
        variant(CREDENTIAL, hostnames=["a*.example.com"]),
        "forbidden",
    ),
]


@needs_node
@pytest.mark.parametrize(("label", "user_ctx", "doc", "verdict"), ROLE_CASES, ids=[c[0] for c in ROLE_CASES])
def test_roles(label: str, user_ctx: dict[str, Any], doc: dict[str, Any], verdict: str) -> None:
    (result,) = js_verdicts([doc], user_ctx)
    assert result["verdict"] == verdict, result["message"]


@needs_node
def test_database_admins_from_the_security_object_are_admins() -> None:
    source = design.load_design_doc()["validate_doc_update"]
    security = {"admins": {"names": ["carol"], "roles": ["ops"]}, "members": {"names": [], "roles": []}}
    cases = [
        {"doc": CREDENTIAL, "user_ctx": {"name": "carol", "roles": []}, "sec_obj": security},
        {"doc": CREDENTIAL, "user_ctx": {"name": "dave", "roles": ["ops"]}, "sec_obj": security},
    ]
    assert [row["verdict"] for row in run_node({"validate": source, "cases": cases})] == ["ok", "ok"]


@needs_node
def test_forbidden_messages_tell_the_admin_why() -> None:
    (other_server,) = js_verdicts([SERVER], {"name": "web2", "roles": ["server:web2"]})
    (certmgr,) = js_verdicts([CREDENTIAL], {"name": "cm", "roles": ["certstore-certmgr"]})
    (member,) = js_verdicts([CREDENTIAL], {"name": "bob", "roles": []})
    assert other_server["message"] == (
        'server "web2" may only write server:web2 and deploy:web2:* documents, not server:web1'
    )
    assert "the certmgr may only write" in certmgr["message"]
    assert "certstore-admin" in member["message"]


# --- views -------------------------------------------------------------------------------------


def map_rows(view: str, docs: Sequence[dict[str, Any]]) -> list[list[list[Any]]]:
    source = design.load_design_doc()["views"][view]["map"]
    return run_node({"map": source, "docs": list(docs)})


@needs_node
def test_views_emit_what_they_promise() -> None:
    hostname_rows, server_rows = (
        map_rows(view, [CREDENTIAL_FULL, SERVER])
        for view in ("credentials_by_hostname", "credentials_by_server")
    )
    assert hostname_rows == [[["*.example.com", None], ["example.com", None]], []]
    assert server_rows == [[["web1", None]], []]
    (state_rows,) = map_rows("credentials_by_status", [STATE])
    assert state_rows == [["issued", STATE["not_after"]]]
    (expiry_rows,) = map_rows("credentials_by_expiry", [STATE])
    assert expiry_rows == [[STATE["not_after"], "issued"]]
    assert map_rows("by_type", [SERVER, {"_id": "x"}]) == [[["server", None]], []]
    # Hostile documents never break a map function.
    assert map_rows("credentials_by_hostname", [{"type": "tls_credential", "hostnames": "x"}]) == [[]]


@pytest.mark.parametrize(
    ("js_name", "enum"),
    [
        ("KEY_TYPES", KeyType),
        ("STATUSES", Status),
        ("CHALLENGES", ChallengeKind),
        ("PROVIDERS", Provider),
        ("DNS_KINDS", DnsKind),
        ("REASONS", RevocationReason),
    ],
)
def test_javascript_lists_mirror_the_python_enums(js_name: str, enum: type[StrEnum]) -> None:
    source = (DESIGN_DIR / "validate_doc_update.js").read_text()
    match = re.search(rf"var {js_name} = \[([^\]]*)\];", source)
    assert match is not None, js_name
    assert re.findall(r"'([^']*)'", match.group(1)) == [member.value for member in enum]


def test_javascript_limits_mirror_python() -> None:
    source = (DESIGN_DIR / "validate_doc_update.js").read_text()
    for name in (
        "MAX_HOSTNAMES",
        "MAX_TEXT",
        "MAX_SERVERS",
        "MAX_ROLES",
        "MAX_CONTACTS",
        "MAX_PATHS",
        "MAX_ERROR_HISTORY",
        "MAX_REV",
        "MAX_FAILURES",
    ):
        match = re.search(rf"var {name} = ([0-9]+);", source)
        assert match is not None and int(match.group(1)) == getattr(documents, name), name
