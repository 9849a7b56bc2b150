"""Document ids: every builder round-trips through parse(), and hostile input is refused by both."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from store import ids
from store.errors import ValidationError

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


@pytest.mark.parametrize(
    ("doc_id", "kind", "parts"),
    [
        (ids.SETTINGS, ids.KIND_SETTINGS, ()),
        (ids.LEASE_CERTMGR, ids.KIND_LEASE, ()),
        (ids.DESIGN, ids.KIND_DESIGN, ()),
        (ids.account_id("letsencrypt"), ids.KIND_ACCOUNT, ("letsencrypt",)),
        (ids.account_state_id("letsencrypt"), ids.KIND_ACCOUNT_STATE, ("letsencrypt",)),
        (ids.dns_id("bind"), ids.KIND_DNS, ("bind",)),
        (ids.server_id("web1.example.com"), ids.KIND_SERVER, ("web1.example.com",)),
        (ids.credential_id("www_example-com"), ids.KIND_CREDENTIAL, ("www_example-com",)),
        (ids.credential_state_id("web"), ids.KIND_CREDENTIAL_STATE, ("web",)),
        (ids.challenge_id(TOKEN), ids.KIND_CHALLENGE, (TOKEN,)),
        (ids.deploy_id("web1", "web"), ids.KIND_DEPLOYMENT, ("web1", "web")),
    ],
)
def test_builders_round_trip(doc_id: str, kind: str, parts: tuple[str, ...]) -> None:
    assert ids.parse(doc_id) == ids.ParsedId(kind, parts)


def test_the_built_ids_look_as_documented() -> None:
    assert ids.account_state_id("le") == "account:le:state"
    assert ids.deploy_id("web1", "web") == "deploy:web1:web"
    assert ids.challenge_id(TOKEN) == f"challenge:{TOKEN}"
    assert ids.parse("deploy:web1:web").name == "web1"
    with pytest.raises(ValueError, match="no name part"):
        _ = ids.parse("settings").name


HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "../etc",
    "a/../b",
    "a/b",
    "/abs",
    "a\\b",
    "a\0b",
    "*.",
    "*.example.com",
    "a:b",
    "web:state",
    "a" * 64,
    "bücher",
    "Web",
    "WEB1",
    "-web",
    ".web",
    "_web",
    "a..b",
    "web 1",
    "web\n",
    "web\t1",
    "\uff57\uff45\uff42",
]
NAMED_BUILDERS: list[Callable[[str], str]] = [
    ids.account_id,
    ids.account_state_id,
    ids.dns_id,
    ids.server_id,
    ids.credential_id,
    ids.credential_state_id,
    lambda name: ids.deploy_id(name, "web"),
    lambda name: ids.deploy_id("web1", name),
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
@pytest.mark.parametrize("build", NAMED_BUILDERS)
def test_builders_refuse_hostile_names(build: Callable[[str], str], name: str) -> None:
    with pytest.raises(ValidationError):
        build(name)


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
@pytest.mark.parametrize("template", ["account:{}", "credential:{}:state", "server:{}", "deploy:{}:web"])
def test_parse_refuses_hostile_names(template: str, name: str) -> None:
    doc_id = template.format(name)
    if doc_id == "account:web:state":
        return  # spliced together, this one is a valid id: the builder refuses the name, not parse()
    with pytest.raises(ValidationError) as info:
        ids.parse(doc_id)
    assert info.value.field == "_id" and info.value.doc_id == doc_id
    assert "is not a certstore document id" in str(info.value)


def test_names_at_the_length_limit_are_fine() -> None:
    assert ids.parse(ids.server_id("a" * 63)).name == "a" * 63


@pytest.mark.parametrize(
    "token",
    [
        "",
        "short",
        "a" * 15,
        "a" * 129,
        TOKEN + "=",
        TOKEN[:20] + "/" + TOKEN[21:],
        TOKEN + ".x",
        "../" * 10,
        "é" * 20,
    ],
)
def test_challenge_tokens_must_be_base64url(token: str) -> None:
    with pytest.raises(ValidationError, match="base64url"):
        ids.challenge_id(token)
    with pytest.raises(ValidationError):
        ids.parse(f"challenge:{token}")


@pytest.mark.parametrize(
    "doc_id",
    [
        "",
        "foo",
        "settings:x",
        "Settings",
        "lease:other",
        "lease",
        "credential",
        "credential:",
        "credential:web:State",
        "credential:web:state:x",
        "server:web1:state",
        "dns:bind:state",
        "deploy:web1",
        "deploy:web1:web:x",
        "challenge:",
        "_design/other",
        "_local/x",
        "certstore:web",
        ":web",
        "credential::web",
    ],
)
def test_parse_refuses_what_no_builder_makes(doc_id: str) -> None:
    with pytest.raises(ValidationError, match="is not a certstore document id"):
        ids.parse(doc_id)


def test_ids_outside_the_certstore_database() -> None:
    assert ids.replication_doc_id("hub-web1", "pull") == "certstore-hub-web1-pull"
    assert ids.replication_name("hub-web1") == "hub-web1"
    with pytest.raises(ValidationError, match="pull or push"):
        ids.replication_doc_id("hub-web1", "both")
    for hostile in ("../x", "a/b", "A", ""):
        with pytest.raises(ValidationError):
            ids.replication_doc_id(hostile, "pull")
