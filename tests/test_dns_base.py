"""The DNS provider base class and registry: zone matching, record rules, add/cleanup bookkeeping, config."""

from __future__ import annotations

import base64
import sys
from collections.abc import Mapping
from typing import Any, Self

import pytest

from agent.dns import DnsProvider, TxtRecord, challenge_record, provider_for, zone_for
from agent.dns.base import parse_endpoint, printable_tail, redact
from agent.dns.exec import ExecProvider
from agent.dns.rfc2136 import Rfc2136Provider
from agent.errors import ConfigError, DnsUpdateError, DnsZoneNotFound
from store.errors import ValidationError

SECRET = "s3cr3t-token-value"


class FakeProvider(DnsProvider):
    """Records calls instead of talking to DNS; ``fail_on`` makes the calls for those values fail."""

    kind = "fake"

    def __init__(self, zones: list[str], *, fail_on: set[str] | None = None, **options: Any) -> None:
        super().__init__(zones, secrets=[SECRET], **options)
        self.calls: list[tuple[str, str, str, str]] = []
        self.fail_on = fail_on or set()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Self:
        return cls(**cls.base_options(config))

    def _add_txt(self, zone: str, fqdn: str, value: str) -> None:
        self._record("add", zone, fqdn, value)

    def _delete_txt(self, zone: str, fqdn: str, value: str) -> None:
        self._record("delete", zone, fqdn, value)

    def _record(self, action: str, zone: str, fqdn: str, value: str) -> None:
        if value in self.fail_on:
            raise DnsUpdateError(f"{action} {value} failed with token {SECRET}", provider=self.kind)
        self.calls.append((action, zone, fqdn, value))


# --- zone_for ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "zones", "expected"),
    [
        ("_acme-challenge.www.example.com", ["example.com"], "example.com"),
        ("example.com", ["example.com"], "example.com"),  # the apex itself
        ("_acme-challenge.a.sub.example.com", ["example.com", "sub.example.com"], "sub.example.com"),
        ("_acme-challenge.a.sub.example.com", ["sub.example.com", "example.com"], "sub.example.com"),
        ("_acme-challenge.badexample.com", ["example.com"], None),  # whole labels only
        ("_acme-challenge.example.com.evil.org", ["example.com"], None),
        ("_acme-challenge.WWW.Example.COM.", ["example.com."], "example.com"),  # case, trailing dot
        ("_acme-challenge.example.org", [], None),
        ("com", ["example.com"], None),
    ],
)
def test_zone_for(name: str, zones: list[str], expected: str | None) -> None:
    assert zone_for(name, zones) == expected


# --- records -------------------------------------------------------------------------------------


def test_challenge_record_for_wildcard_and_apex_share_a_name() -> None:
    assert challenge_record("*.example.com", "v").fqdn == "_acme-challenge.example.com"
    assert challenge_record("Example.COM.", "v").fqdn == "_acme-challenge.example.com"
    assert challenge_record("xn--bcher-kva.example", "v").fqdn == "_acme-challenge.xn--bcher-kva.example"


@pytest.mark.parametrize(
    "fqdn",
    [
        "",
        "Upper.example.com",
        "trailing.example.com.",
        "a..b",
        "sp ace.example",
        "nul\0.example",
        "x" * 254,
        "a/b.example",
        "b\u00fccher.example",
        "*.example.com",
        ("y" * 64) + ".example",
    ],
)
def test_txt_record_refuses_bad_names(fqdn: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TxtRecord(fqdn, "value")
    assert caught.value.field == "fqdn"


@pytest.mark.parametrize("value", ["", "x" * 256, "new\nline", "nul\0", "caf\u00e9", "tab\t"])
def test_txt_record_refuses_bad_values(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TxtRecord("_acme-challenge.example.com", value)
    assert caught.value.field == "value"


def test_txt_record_accepts_quotes_spaces_and_long_values() -> None:
    TxtRecord("_acme-challenge.example.com", 'a "quoted" value; with spaces\\')
    TxtRecord("_acme-challenge.example.com", "x" * 255)


# --- bookkeeping ---------------------------------------------------------------------------------


def test_present_adds_each_record_to_its_longest_zone() -> None:
    provider = FakeProvider(["example.com", "sub.example.com"])
    a = challenge_record("www.example.com", "a")
    b = challenge_record("x.sub.example.com", "b")
    provider.present([a, b])
    assert provider.calls == [
        ("add", "example.com", "_acme-challenge.www.example.com", "a"),
        ("add", "sub.example.com", "_acme-challenge.x.sub.example.com", "b"),
    ]
    assert provider.added == (a, b)


def test_present_twice_adds_once_and_two_values_on_one_name_are_both_added() -> None:
    provider = FakeProvider(["example.com"])
    apex, wildcard = challenge_record("example.com", "1"), challenge_record("*.example.com", "2")
    provider.present([apex, wildcard])
    provider.present([apex])
    assert [call[0] for call in provider.calls] == ["add", "add"]
    assert provider.added == (apex, wildcard)


def test_a_name_outside_every_zone_is_refused_before_anything_is_added() -> None:
    provider = FakeProvider(["example.com", "example.net"])
    inside, outside = challenge_record("a.example.com", "1"), challenge_record("a.example.org", "2")
    with pytest.raises(DnsZoneNotFound) as caught:
        provider.present([inside, outside])
    assert caught.value.name == "_acme-challenge.a.example.org"
    assert caught.value.zones == ("example.com", "example.net")
    assert "example.com, example.net" in str(caught.value)
    assert provider.calls == []


def test_cleanup_deletes_only_what_was_added() -> None:
    provider = FakeProvider(["example.com"])
    ours, other = challenge_record("a.example.com", "ours"), challenge_record("a.example.com", "other")
    provider.present([ours])
    provider.cleanup([ours, other])
    assert provider.calls[1:] == [("delete", "example.com", ours.fqdn, "ours")]
    provider.cleanup()  # nothing left: no call
    assert len(provider.calls) == 2


def test_cleanup_without_arguments_deletes_everything_added_in_order() -> None:
    provider = FakeProvider(["example.com"])
    records = [challenge_record(f"h{i}.example.com", str(i)) for i in range(3)]
    provider.present(records)
    provider.cleanup()
    assert [call[3] for call in provider.calls if call[0] == "delete"] == ["0", "1", "2"]
    assert provider.added == ()


def test_a_failed_add_keeps_what_was_added_before_it_for_cleanup() -> None:
    provider = FakeProvider(["example.com"], fail_on={"bad"})
    good, bad = challenge_record("a.example.com", "good"), challenge_record("b.example.com", "bad")
    with pytest.raises(DnsUpdateError):
        provider.present([good, bad])
    assert provider.added == (good,)
    provider.cleanup()
    assert provider.calls[-1] == ("delete", "example.com", good.fqdn, "good")


def test_a_failed_delete_is_raised_after_the_others_and_retried_later() -> None:
    provider = FakeProvider(["example.com"])
    first, second = challenge_record("a.example.com", "first"), challenge_record("b.example.com", "second")
    provider.present([first, second])
    provider.fail_on = {"first"}
    with pytest.raises(DnsUpdateError, match="delete first failed"):
        provider.cleanup()
    assert provider.calls[-1] == ("delete", "example.com", second.fqdn, "second")  # still attempted
    assert provider.added == (first,)
    provider.fail_on = set()
    provider.cleanup()
    assert provider.added == ()


def test_secrets_are_cut_out_of_provider_errors() -> None:
    provider = FakeProvider(["example.com"], fail_on={"v"})
    with pytest.raises(DnsUpdateError) as caught:
        provider.present([challenge_record("a.example.com", "v")])
    assert SECRET not in str(caught.value)
    assert "***" in str(caught.value)


def test_base_options_and_resolver_overrides() -> None:
    config = {"zones": ["Example.com.", "example.net"], "nameservers": ["127.0.0.1:5353", "[::1]:53"]}
    assert DnsProvider.base_options(config) == {
        "zones": ("example.com", "example.net"),
        "ttl": 60,
        "nameservers": ("127.0.0.1:5353", "[::1]:53"),
    }
    provider = FakeProvider.from_config(config, {})
    assert provider.resolver_overrides == {
        "example.com": ["127.0.0.1:5353", "[::1]:53"],
        "example.net": ["127.0.0.1:5353", "[::1]:53"],
    }
    assert FakeProvider.from_config({"zones": ["example.com"]}, {}).resolver_overrides is None


# --- helpers -------------------------------------------------------------------------------------


def test_redact_replaces_longest_secrets_first() -> None:
    assert redact("token abcdef and abc", ["abc", "abcdef", ""]) == "token *** and ***"


def test_printable_tail_drops_control_characters_and_keeps_the_end() -> None:
    text = "\n".join(f"line {i}" for i in range(20)) + "\n\x1b[31mred\x07\n"
    tail = printable_tail(text, lines=3)
    assert tail == "line 18 | line 19 | [31mred"
    assert printable_tail("x" * 5000, chars=10) == "..." + "x" * 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ns.example.com", ("ns.example.com", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5300", ("::1", 5300)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text, default_port=53) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:70000", "host:port", "[::1]:x"])
def test_parse_endpoint_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint(text, default_port=53)


# --- the registry --------------------------------------------------------------------------------

TSIG_SECRET = base64.b64encode(b"k" * 32).decode()


def rfc2136_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"zones": ["example.com"], "server": "127.0.0.1:5353", "tsig_key_name": "k."}
    config.update(changes)
    return config


def test_provider_for_builds_each_kind() -> None:
    rfc = provider_for("rfc2136", rfc2136_config(ttl=120), {"tsig_secret": TSIG_SECRET})
    assert isinstance(rfc, Rfc2136Provider)
    assert (rfc.host, rfc.port, rfc.ttl, rfc.zones) == ("127.0.0.1", 5353, 120, ("example.com",))
    run = provider_for("exec", {"zones": ["example.com"], "command": ["/bin/true"]}, {})
    assert isinstance(run, ExecProvider)


def test_provider_for_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="unknown DNS provider kind") as caught:
        provider_for("route53", {"zones": ["example.com"]}, {})
    assert caught.value.field == "kind"


@pytest.mark.parametrize(
    ("config", "secrets", "field"),
    [
        (rfc2136_config(zones=[]), {"tsig_secret": TSIG_SECRET}, "zones"),
        (rfc2136_config(zones="example.com"), {"tsig_secret": TSIG_SECRET}, "zones"),
        (rfc2136_config(zones=["bad zone"]), {"tsig_secret": TSIG_SECRET}, "zones"),
        (rfc2136_config(server=""), {"tsig_secret": TSIG_SECRET}, "server"),
        (rfc2136_config(server="127.0.0.1:99999"), {"tsig_secret": TSIG_SECRET}, "server"),
        (rfc2136_config(tsig_algorithm="hmac-md5"), {"tsig_secret": TSIG_SECRET}, "tsig_algorithm"),
        (rfc2136_config(ttl=0), {"tsig_secret": TSIG_SECRET}, "ttl"),
        (rfc2136_config(ttl=True), {"tsig_secret": TSIG_SECRET}, "ttl"),
        (rfc2136_config(nameservers=["nope"]), {"tsig_secret": TSIG_SECRET}, "nameservers"),
        (rfc2136_config(tsig_key_name="a..b."), {"tsig_secret": TSIG_SECRET}, "tsig_key_name"),
        (rfc2136_config(), {}, "tsig_secret"),
        (rfc2136_config(), {"tsig_secret": "not base64!!"}, "tsig_secret"),
    ],
)
def test_bad_rfc2136_settings_name_the_field(
    config: dict[str, Any], secrets: dict[str, str], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        provider_for("rfc2136", config, secrets)
    assert caught.value.field == field
    assert "not base64!!" not in str(caught.value)


def test_lexicon_kind_without_dns_lexicon_installed_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "agent.dns.lexicon", raising=False)
    for name in [name for name in sys.modules if name.split(".")[0] == "lexicon"] + ["lexicon"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import lexicon...` fails as if not installed
    with pytest.raises(ConfigError, match=r"certstore\[lexicon\]") as caught:
        provider_for("lexicon", {"zones": ["example.com"], "provider": "powerdns"}, {})
    assert caught.value.field == "kind"
