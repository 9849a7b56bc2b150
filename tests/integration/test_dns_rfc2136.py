"""The RFC 2136 provider against a real BIND9: the provider contract, TSIG failures, an unreachable server."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from dns_contract import ZONE, DnsProviderContract, new_value, tsig_add

from agent.dns import DnsProvider, challenge_record, provider_for
from agent.dns.rfc2136 import Rfc2136Provider
from agent.errors import DnsUpdateError
from store.localservices import BindServer, free_port

pytestmark = pytest.mark.integration


def rfc2136_config(bind: BindServer, **changes: Any) -> dict[str, Any]:
    """The settings of a ``dns:`` document for ``bind``."""
    config: dict[str, Any] = {
        "zones": [ZONE],
        "server": bind.address,
        "tsig_key_name": bind.tsig_key_name,
        "tsig_algorithm": bind.tsig_algorithm,
        "nameservers": [bind.address],
    }
    config.update(changes)
    return config


class TestRfc2136Contract(DnsProviderContract):
    @pytest.fixture(autouse=True)
    def _bind(self, bind_server: Callable[..., BindServer]) -> None:
        self.bind = bind_server([ZONE])
        self.server = self.bind.address

    def make_provider(self) -> DnsProvider:
        return provider_for("rfc2136", rfc2136_config(self.bind), {"tsig_secret": self.bind.tsig_secret})

    def seed_txt(self, fqdn: str, value: str) -> None:
        tsig_add(self.bind, fqdn, value)


@pytest.fixture
def bind(bind_server: Callable[..., BindServer]) -> BindServer:
    return bind_server([ZONE])


def test_wrong_tsig_secret_is_a_clear_refusal(bind: BindServer) -> None:
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    provider = provider_for("rfc2136", rfc2136_config(bind), {"tsig_secret": wrong})
    with pytest.raises(DnsUpdateError) as caught:
        provider.present([challenge_record("www.example.com", new_value())])
    message = str(caught.value)
    assert "refused the update" in message and "TSIG key name/secret" in message
    assert bind.address in message
    assert caught.value.rcode == "BADSIG"
    assert wrong not in message and bind.tsig_secret not in message
    assert provider.added == ()


def test_unknown_tsig_key_name_is_a_clear_refusal(bind: BindServer) -> None:
    config = rfc2136_config(bind, tsig_key_name="someone-else.")
    provider = provider_for("rfc2136", config, {"tsig_secret": bind.tsig_secret})
    with pytest.raises(DnsUpdateError, match="refused the update") as caught:
        provider.present([challenge_record("www.example.com", new_value())])
    assert caught.value.rcode == "BADKEY"


def test_zone_the_server_does_not_serve_is_refused_or_notauth(bind: BindServer) -> None:
    config = rfc2136_config(bind, zones=["example.net"])
    provider = provider_for("rfc2136", config, {"tsig_secret": bind.tsig_secret})
    with pytest.raises(DnsUpdateError, match="refused the update") as caught:
        provider.present([challenge_record("www.example.net", new_value())])
    assert caught.value.rcode in ("REFUSED", "NOTAUTH")
    assert caught.value.server == bind.address


def test_tsig_algorithm_mismatch_is_refused(bind: BindServer) -> None:
    # The fixture's key is hmac-sha256; the same name and secret under hmac-sha512 is another key.
    config = rfc2136_config(bind, tsig_algorithm="hmac-sha512")
    provider = provider_for("rfc2136", config, {"tsig_secret": bind.tsig_secret})
    assert isinstance(provider, Rfc2136Provider)
    with pytest.raises(DnsUpdateError, match="refused the update"):
        provider.present([challenge_record("www.example.com", new_value())])


def test_unreachable_server_names_the_server() -> None:
    port = free_port()  # nothing listens there
    provider = Rfc2136Provider(
        [ZONE],
        server=f"127.0.0.1:{port}",
        tsig_key_name="k.",
        tsig_secret=base64.b64encode(b"x" * 32).decode(),
        timeout=2,
    )
    with pytest.raises(DnsUpdateError, match=f"127.0.0.1:{port}"):
        provider.present([challenge_record("www.example.com", new_value())])
