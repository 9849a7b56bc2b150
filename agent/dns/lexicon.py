"""DNS-01 through any DNS provider API that dns-lexicon supports (PowerDNS, Cloudflare, Route 53, OVH...).

Settings of the ``dns:`` document (besides ``zones``, ``ttl``, ``nameservers``): ``provider`` (lexicon's
provider name, e.g. ``powerdns``) and ``provider_options`` (that provider's non-secret options, e.g.
``{"pdns_server": "http://10.0.0.5:8081"}``). Credentials: the provider's secret options (e.g.
``auth_token``), merged into ``provider_options``.

We build lexicon's provider object ourselves from a ``ConfigResolver`` whose ``domain`` is the zone of our
``dns:`` document, instead of going through ``lexicon.client.Client``: the Client always guesses the zone
with tldextract, which tries to download the public-suffix list first (a delay and a logged traceback on
an offline certmgr, a cache file in $HOME) and guesses wrong for delegated sub-zones and for zones under
suffixes it does not know (``.test``, ``.internal``). Our document already names the zone, so nothing is
guessed. This uses lexicon's provider loader from ``lexicon._private.discovery`` (the Client uses the
same): the supported version range is pinned in the requirement.

Lexicon logs requests and responses at DEBUG; its loggers are raised to WARNING so that a certmgr run
with ``--debug`` does not fill the user's log with them.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from lexicon._private.discovery import find_providers, load_provider_module
from lexicon.config import ConfigResolver
from lexicon.interfaces import Provider as LexiconApi

from agent.dns.base import DEFAULT_TTL, DnsProvider, config_str, printable_tail, redact
from agent.errors import ConfigError, DnsUpdateError
from store.names import show

for _noisy in ("lexicon", "tldextract"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


class LexiconProvider(DnsProvider):
    """Adds and deletes TXT values through a dns-lexicon provider."""

    kind = "lexicon"

    def __init__(
        self,
        zones: Sequence[str],
        *,
        provider: str,
        provider_options: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        ttl: int = DEFAULT_TTL,
        nameservers: Sequence[str] = (),
    ) -> None:
        secret_values = [value for value in (secrets or {}).values() if value]
        # Secrets may come back URL-encoded inside an error (a token in a query string).
        encoded = [urllib.parse.quote(value, safe="") for value in secret_values]
        super().__init__(zones, ttl=ttl, nameservers=nameservers, secrets=[*secret_values, *encoded])
        available = find_providers()
        if provider not in available:
            raise ConfigError(f"dns-lexicon has no provider {show(provider)}", field="provider")
        if not available[provider]:
            raise ConfigError(
                f"the dns-lexicon provider {provider} needs extra packages: "
                f"pip install 'dns-lexicon[{provider}]'",
                field="provider",
            )
        self.provider = provider
        self._provider_class: type[LexiconApi] = load_provider_module(provider).Provider
        self._options = {**(provider_options or {}), **(secrets or {})}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Self:
        """Settings ``provider`` and ``provider_options``; credentials are the provider's secret options."""
        options = config.get("provider_options", {})
        if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
            raise ConfigError(
                "provider_options must map lexicon option names to values", field="provider_options"
            )
        return cls(
            provider=config_str(config, "provider"),
            provider_options=options,
            secrets=secrets,
            **cls.base_options(config),
        )

    def _add_txt(self, zone: str, fqdn: str, value: str) -> None:
        # Lexicon's create_record adds the value to the name's existing TXT values (for PowerDNS it
        # rewrites the RRset with the old values plus the new one).
        self._with_api(
            zone, f"adding a TXT value to {fqdn}", lambda api: api.create_record("TXT", fqdn, value)
        )

    def _delete_txt(self, zone: str, fqdn: str, value: str) -> None:
        self._with_api(
            zone,
            f"deleting a TXT value from {fqdn}",
            lambda api: api.delete_record(None, "TXT", fqdn, value),
        )

    def _with_api(self, zone: str, what: str, action: Callable[[LexiconApi], object]) -> None:
        """Authenticate a fresh lexicon provider for ``zone``, run ``action``, clean it up."""
        config = ConfigResolver().with_dict(  # type: ignore[no-untyped-call]
            {"provider_name": self.provider, "domain": zone, "ttl": self.ttl, self.provider: self._options}
        )
        try:
            api = self._provider_class(config)
            api.authenticate()
            try:
                action(api)
            finally:
                api.cleanup()
        except Exception as exc:  # noqa: BLE001 - lexicon providers raise anything (requests, their own, Exception)
            detail = printable_tail(redact(f"{type(exc).__name__}: {exc}", self._secrets), lines=3, chars=500)
            raise DnsUpdateError(
                f"{what}: the {self.provider} API (dns-lexicon) failed: {detail}", provider=self.kind
            ) from None  # the original may carry a credential in its text or attributes
