"""The lexicon provider (dns-lexicon's ``powerdns``) against a real pdns_server: the contract, API errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dns_contract import ZONE, DnsProviderContract, new_value
from pdns_server import PdnsServer, missing_reason, running_pdns

from agent.dns import DnsProvider, challenge_record, provider_for
from agent.dns.propagation import query_txt
from agent.errors import ConfigError, DnsUpdateError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]
pytest.importorskip("lexicon", reason="dns-lexicon is not installed (pip install dns-lexicon)")


@pytest.fixture
def pdns(tmp_path: Path) -> Iterator[PdnsServer]:
    with running_pdns(tmp_path / "pdns") as server:
        server.create_zone(ZONE)
        yield server


def lexicon_config(pdns: PdnsServer, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "zones": [ZONE],
        "provider": "powerdns",
        "provider_options": {"pdns_server": pdns.api_url},
        "nameservers": [pdns.dns_address],
    }
    config.update(changes)
    return config


class TestLexiconPowerDnsContract(DnsProviderContract):
    @pytest.fixture(autouse=True)
    def _pdns(self, pdns: PdnsServer) -> None:
        self.pdns = pdns
        self.server = pdns.dns_address

    def make_provider(self) -> DnsProvider:
        return provider_for("lexicon", lexicon_config(self.pdns), {"auth_token": self.pdns.api_key})

    def seed_txt(self, fqdn: str, value: str) -> None:
        rrset = {
            "name": fqdn + ".",
            "type": "TXT",
            "ttl": 60,
            "changetype": "REPLACE",
            "records": [{"content": f'"{value}"', "disabled": False}],
        }
        self.pdns.api("PATCH", f"/zones/{ZONE}.", json={"rrsets": [rrset]}).raise_for_status()


def test_wrong_api_key_is_a_clear_error_without_the_key(pdns: PdnsServer) -> None:
    wrong = "not-the-key-" + new_value()
    provider = provider_for("lexicon", lexicon_config(pdns), {"auth_token": wrong})
    with pytest.raises(DnsUpdateError) as caught:
        provider.present([challenge_record("www.example.com", new_value())])
    message = str(caught.value)
    assert "powerdns" in message and "401" in message
    assert wrong not in message and pdns.api_key not in message
    assert caught.value.__cause__ is None  # the library's exception is not chained (it may hold the key)


def test_a_zone_under_a_non_public_suffix_is_used_as_given(pdns: PdnsServer) -> None:
    # lexicon's Client would guess the zone with tldextract and get "corp.test" wrong; we pass it.
    pdns.create_zone("corp.test")
    config = lexicon_config(pdns, zones=["corp.test"])
    provider = provider_for("lexicon", config, {"auth_token": pdns.api_key})
    record = challenge_record("www.corp.test", new_value())
    provider.present([record])
    assert query_txt(pdns.dns_address, record.fqdn) == {record.value}
    provider.cleanup()
    assert query_txt(pdns.dns_address, record.fqdn) == set()


def test_lexicon_debug_logging_stays_out_of_the_log(
    pdns: PdnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    provider = provider_for("lexicon", lexicon_config(pdns), {"auth_token": pdns.api_key})
    with caplog.at_level(logging.DEBUG):
        provider.present([challenge_record("www.example.com", new_value())])
        provider.cleanup()
    assert not [r for r in caplog.records if r.name.startswith(("lexicon", "tldextract"))]
    assert pdns.api_key not in caplog.text


def test_unknown_lexicon_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no provider") as caught:
        provider_for("lexicon", {"zones": [ZONE], "provider": "no-such-dns"}, {})
    assert caught.value.field == "provider"
