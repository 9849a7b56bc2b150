"""Shared value rules: host names (IDNA 2008), names, tokens, timestamps and plaintext private keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from store import names
from store.errors import ValidationError


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("www.example.com", "www.example.com"),
        ("WWW.Example.COM", "www.example.com"),
        ("www.example.com.", "www.example.com"),
        ("  www.example.com ", "www.example.com"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("*.Bücher.example", "*.xn--bcher-kva.example"),
        ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\u3002com", "example.com"),
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_normalize_hostname(typed: str, stored: str) -> None:
    assert names.normalize_hostname(typed) == stored
    assert names.check_hostname(stored) == stored


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("a*.example.com", "a wildcard must be the whole left-most label"),
        ("*.*.example.com", "a wildcard must be the whole left-most label"),
        ("x.*.example.com", "a wildcard must be the whole left-most label"),
        ("*", "a wildcard must be the whole left-most label"),
        ("*.com", "needs at least two labels"),
        ("192.0.2.1", "is an IP address"),
        ("2001:db8::1", "is an IP address"),
        ("[::1]", "is an IP address"),
        ("\uff11\uff19\uff12.\uff10.\uff12.\uff11", "is an IP address"),
        ("localhost", "needs at least two labels"),
        ("a" * 64 + ".com", "not a valid host name"),
        (".".join(["a" * 63] * 4) + ".com", "not a valid host name"),
        ("-a.example.com", "not a valid host name"),
        ("ab--cd.example.com", "not a valid host name"),
        ("xn--zz.example", "not a valid host name"),
        ("a_b.example.com", "not a valid host name"),
        ("a..b", "not a valid host name"),
        ("", "not a valid host name"),
        ("host.123", "is all digits"),
        ("a/b.example.com", "not a valid host name"),
        ("a\0.example.com", "not a valid host name"),
    ],
)
def test_normalize_hostname_refuses(typed: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        names.normalize_hostname(typed)


def test_wildcards_can_be_refused() -> None:
    with pytest.raises(ValidationError, match="may not be a wildcard here"):
        names.normalize_hostname("*.example.com", wildcard=False)
    with pytest.raises(ValidationError, match="may not be a wildcard here"):
        names.check_hostname("*.example.com", wildcard=False)


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("Bücher.example", 'not in normalised form: write "xn--bcher-kva.example"'),
        ("WWW.example.com", 'not in normalised form: write "www.example.com"'),
        ("www.example.com.", 'not in normalised form: write "www.example.com"'),
        ("Ab_c.example", "not in normalised form: write it in lowercase punycode"),
        ("a" * 64 + ".com", "is longer than 63 characters"),
        ("a." * 127 + "com", "is longer than 253 characters"),
        ("ab--cd.example.com", 'has "--" in third and fourth position'),
        ("-a.example.com", "starts or ends with a hyphen"),
        ("a-.example.com", "starts or ends with a hyphen"),
        ("a_b.example.com", 'may only contain a-z, 0-9 and "-"'),
        ("a..example.com", "has an empty label"),
        ("", "is empty"),
    ],
)
def test_check_hostname_accepts_only_the_normalised_form(stored: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        names.check_hostname(stored)


def test_normalize_hostnames_names_the_colliding_pair() -> None:
    assert names.normalize_hostnames(["a.example.com", "Bücher.example"]) == [
        "a.example.com",
        "xn--bcher-kva.example",
    ]
    with pytest.raises(ValidationError) as info:
        names.normalize_hostnames(["a.example.com", "Bücher.example", "xn--bcher-kva.example"])
    assert str(info.value) == (
        '"Bücher.example" and "xn--bcher-kva.example" are the same host name (xn--bcher-kva.example); '
        "list it once"
    )
    with pytest.raises(ValidationError, match="between 1 and 100 host names, not 0"):
        names.normalize_hostnames([])
    with pytest.raises(ValidationError, match="not 101"):
        names.normalize_hostnames([f"h{i}.example.com" for i in range(101)])


@pytest.mark.parametrize("good", ["web1", "web1.example.com", "a", "0", "a_b-c.d", "a" * 63])
def test_names(good: str) -> None:
    assert names.check_server_name(good) == good
    assert names.check_name(good) == good


@pytest.mark.parametrize(
    "bad", ["", "Web1", "-a", ".a", "_a", "a..b", "a/b", "a\\b", "a:b", "a" * 64, "ü", "a b"]
)
def test_names_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        names.check_name(bad)


@pytest.mark.parametrize("good", ["web.kyr", "Example.com.pem", "a", "k-1_2", "a" * 64])
def test_keyfiles(good: str) -> None:
    assert names.check_keyfile(good) == good


@pytest.mark.parametrize(
    "bad", ["", ".", "..", ".hidden", "../x", "a/b", "a\\b", "a..b", "a\0", "a" * 65, "ü.kyr"]
)
def test_keyfiles_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        names.check_keyfile(bad)


def test_enums_hold_the_documented_values() -> None:
    assert [key_type.value for key_type in names.KeyType] == [
        "ecdsa-p256",
        "ecdsa-p384",
        "rsa-2048",
        "rsa-3072",
        "rsa-4096",
    ]
    assert [status.value for status in names.Status] == [
        "draft",
        "pending",
        "issued",
        "renew",
        "revoked",
        "error",
        "expired",
        "waiting",
        "archived",
    ]
    assert [kind.value for kind in names.ChallengeKind] == ["auto", "http-01", "dns-01"]
    assert [provider.value for provider in names.Provider] == ["acme", "import", "manual-csr", "internal-ca"]
    assert names.RevocationReason.KEY_COMPROMISE.code == 1
    assert names.RevocationReason.AA_COMPROMISE.code == 10
    assert names.choice_problem("ed25519", names.KeyType) == (
        "must be one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096"
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("localhost:443", None),
        ("[::1]:8443", None),
        ("127.0.0.1:1", None),
        ("localhost", "must be host:port"),
        ("localhost:0", "must be host:port"),
        ("localhost:65536", "must be host:port"),
        ("Localhost:443", "must be host:port"),
    ],
)
def test_endpoints(value: str, problem: str | None) -> None:
    result = names.endpoint_problem(value)
    assert result is None if problem is None else (result is not None and result.startswith(problem))


def test_urls_and_contacts() -> None:
    assert names.url_problem("https://acme.example/dir") is None
    assert names.url_problem("https://127.0.0.1:14000/dir") is None
    assert names.url_problem("http://acme.example/dir") is not None
    assert names.url_problem("http://web1:8402", schemes=("http", "https")) is None
    assert names.url_problem("https://a b/") is not None
    assert names.contact_problem("mailto:pki@example.com") is None
    assert names.contact_problem("pki@example.com") is not None
    assert names.notify_problem("https://hooks.example/x") is None
    assert names.notify_problem("sms:123") is not None


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T12:00:00.5Z", datetime(2026, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2024-02-29T23:59:59.123456Z", datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_timestamps(text: str, moment: datetime) -> None:
    assert names.parse_timestamp(text) == moment
    assert names.parse_timestamp(names.format_timestamp(moment)) == moment


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-31",
        "2026-01-31T12:00:00",
        "2026-01-31T12:00:00+00:00",
        "2026-01-31 12:00:00Z",
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-01-31T24:00:00Z",
        "2026-01-31T12:60:00Z",
        "2026-01-31T12:00:60Z",
        "2026-01-31T12:00:00.1234567Z",
        "1969-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff16-01-31T12:00:00Z",
        "2026-01-31T12:00:00Z\n",
    ],
)
def test_timestamps_refused(text: str) -> None:
    assert names.timestamp_problem(text) is not None
    with pytest.raises(ValidationError, match="ISO-8601 UTC timestamp"):
        names.parse_timestamp(text)


def test_format_timestamp_converts_to_utc_and_refuses_naive() -> None:
    moment = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert names.format_timestamp(moment) == "2026-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="aware"):
        names.format_timestamp(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("-----BEGIN PRIVATE KEY-----\nMIG...", "$"),
        ({"a": "-----BEGIN RSA PRIVATE KEY-----"}, "a"),
        ({"a": {"b": [1, "x", "-----BEGIN EC PRIVATE KEY-----"]}}, "a.b[2]"),
        ({"a": {"-----BEGIN OPENSSH PRIVATE KEY-----": 1}}, "a.<key>"),
        ({"x": "-----BEGIN ENCRYPTED PRIVATE KEY-----"}, "x"),
        ({"x": "-----BEGIN DSA PRIVATE KEY-----"}, "x"),
        ({"x": "text before -----BEGIN\r\nRSA\tPRIVATE\r\n KEY-----"}, "x"),
        ({"x": "-----BEGIN PGP PRIVATE KEY BLOCK-----"}, "x"),
        ([{"ok": "fine"}, {"deep": [["-----BEGIN PRIVATE KEY-----"]]}], "$[1].deep[0][0]"),
        ({"first": "-----BEGIN PRIVATE KEY-----", "second": "-----BEGIN PRIVATE KEY-----"}, "first"),
    ],
)
def test_find_plaintext_private_key(value: object, path: str) -> None:
    assert names.find_plaintext_private_key(value) == path


@pytest.mark.parametrize(
    "value",
    [
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----",
        "-----begin private key-----",
        "-----BEGINPRIVATE KEY-----",
        "BEGIN PRIVATE KEY",
        "-----BEGIN PRIVATEKEY-----",
        {"private_key": "sealed"},
        [1, 2.5, None, True, {"v": 1}],
    ],
)
def test_find_plaintext_private_key_ignores_other_text(value: object) -> None:
    assert names.find_plaintext_private_key(value) is None


def test_find_plaintext_private_key_survives_deep_nesting() -> None:
    value: object = "-----BEGIN PRIVATE KEY-----"
    for _ in range(5000):
        value = [value]
    path = names.find_plaintext_private_key(value)
    assert path is not None and path.endswith("[0]")


def test_show_quotes_and_cuts_like_the_javascript() -> None:
    assert names.show("a\0b") == '"a\\u0000b"'
    assert names.show({"a": [1, True]}) == '{"a":[1,true]}'
    cut = names.show("x" * 200)
    assert cut.endswith('..."') and len(cut) == 80
    emoji = names.show("😀" * 100)  # never cut inside a surrogate pair
    assert emoji == '"' + "😀" * 37 + '..."'
