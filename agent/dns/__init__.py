"""DNS-01: providers that publish ``_acme-challenge`` TXT values, and the propagation check.

:func:`provider_for` builds the provider a ``dns:`` document describes. The registry is a plain dict, not
entry points: the document model (``store.names.DnsKind`` and ``validate_doc_update``) admits exactly these
three kinds, so a plugin kind could never be stored; dns-lexicon already covers the long tail of DNS APIs
and ``exec`` covers anything else. Each kind is imported only when used, so dns-lexicon (an optional
dependency) is needed only by fleets that use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from agent.dns.base import DnsProvider, TxtRecord, challenge_record, zone_for
from agent.errors import ConfigError
from store.names import DnsKind

__all__ = ["PROVIDERS", "DnsProvider", "TxtRecord", "challenge_record", "provider_for", "zone_for"]

# kind -> (module, class)
PROVIDERS: Mapping[str, tuple[str, str]] = {
    DnsKind.RFC2136: ("agent.dns.rfc2136", "Rfc2136Provider"),
    DnsKind.LEXICON: ("agent.dns.lexicon", "LexiconProvider"),
    DnsKind.EXEC: ("agent.dns.exec", "ExecProvider"),
}


def provider_for(kind: str, config: Mapping[str, Any], secrets: Mapping[str, str]) -> DnsProvider:
    """The provider for a ``dns:`` document: ``kind``, its settings ``config``, its unsealed ``secrets``."""
    if kind not in PROVIDERS:
        raise ConfigError(f"unknown DNS provider kind {kind!r} (use {', '.join(PROVIDERS)})", field="kind")
    module_name, class_name = PROVIDERS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"the {kind} DNS provider cannot be loaded ({exc}): pip install 'certstore[lexicon]'",
            field="kind",
        ) from exc
    provider_class: type[DnsProvider] = getattr(module, class_name)
    return provider_class.from_config(config, secrets)
