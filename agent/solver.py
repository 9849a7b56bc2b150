"""The certmgr's challenge solver: HTTP-01 through the replicated database, DNS-01 through providers.

HTTP-01: a ``challenge:<token>`` document per challenge; replication carries it to every server and
every agent's responder serves it from memory. Before the CA is told to look, the solver confirms
that every server advertising a responder (with a fresh heartbeat) serves the token — the CA may
reach any of them — unless the self-check is switched off (Domino's ``-g``).

DNS-01: a name under a zone that a ``dns:`` provider serves uses DNS-01 automatically, as Domino does
for a registered domain; a wildcard requires it. Records are added (never replaced: wildcard + apex
put two values on one name), checked at every authoritative server, and exactly those are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.dns import DnsProvider, TxtRecord, challenge_record
from agent.dns.propagation import wait_for_txt
from agent.errors import ChallengeSetupError, DnsZoneNotFound
from agent.issuer import PendingChallenge
from agent.selfcheck import confirm_served
from store.couch import Database
from store.documents import AcmeChallenge, TlsCredential
from store.names import ChallengeKind

log = logging.getLogger(__name__)

HTTP01 = "http-01"
DNS01 = "dns-01"


@dataclass(frozen=True)
class SolverSettings:
    """How long to wait for challenges to be visible, and whether to check at all."""

    self_check: bool = True
    serve_deadline_s: float = 30.0
    propagation_deadline_s: float = 120.0
    challenge_ttl: timedelta = timedelta(hours=1)


class FleetSolver:
    """Solves one credential's order. ``dns_providers`` are the fleet's providers (one per ``dns:`` doc);
    ``responders`` gives, when called, the responder URL of every server that is alive now."""

    def __init__(
        self,
        db: Database,
        credential: TlsCredential,
        dns_providers: Sequence[DnsProvider],
        responders: Callable[[], Mapping[str, str]],
        settings: SolverSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.credential = credential
        self.dns_providers = dns_providers
        self.responders = responders
        self.settings = settings
        self.clock = clock
        self._written: list[str] = []

    def provider_for_name(self, name: str) -> DnsProvider | None:
        """The provider whose zones contain ``_acme-challenge.<name>`` (the most specific zone wins)."""
        record = challenge_record(name, "x")
        best: tuple[int, DnsProvider] | None = None
        for provider in self.dns_providers:
            try:
                zone = provider.zone_of(record)
            except DnsZoneNotFound:
                continue
            if best is None or len(zone) > best[0]:
                best = (len(zone), provider)
        return None if best is None else best[1]

    # --- the ChallengeSolver protocol ---------------------------------------------------------

    def choose(self, identifier: str, wildcard: bool, offered: Sequence[str]) -> str:
        """DNS-01 when forced or a provider serves the name; HTTP-01 otherwise (never for a wildcard)."""
        name = f"*.{identifier}" if wildcard else identifier
        forced = self.credential.challenge
        provider = self.provider_for_name(identifier)
        if forced is ChallengeKind.HTTP_01 or (forced is ChallengeKind.AUTO and provider is None):
            if wildcard:
                raise ChallengeSetupError(
                    f"{name}: a wildcard can only be validated over dns-01, and no DNS provider serves "
                    f"{identifier} (add a dns: document whose zones include it)"
                )
            wanted = HTTP01
        else:
            if provider is None:
                raise ChallengeSetupError(
                    f"{name}: the request asks for dns-01, but no DNS provider serves {identifier} "
                    "(add a dns: document whose zones include it)"
                )
            wanted = DNS01
        if wanted not in offered:
            raise ChallengeSetupError(
                f"{name}: the CA does not offer {wanted} (it offers {', '.join(offered)})"
            )
        return wanted

    def present(self, items: Sequence[PendingChallenge]) -> None:
        """Publish every challenge, then wait until each is visible where the CA will look."""
        http = [item for item in items if item.type == HTTP01]
        dns = [item for item in items if item.type == DNS01]
        if http:
            self._publish_http(http)
        by_provider = self._dns_records(dns)
        for provider, records in by_provider:
            provider.present(records)
        for provider, records in by_provider:
            wait_for_txt(
                records,
                self.settings.propagation_deadline_s,
                resolver_overrides=provider.resolver_overrides,
            )
        if http and self.settings.self_check:
            responders = self.responders()
            if responders:
                took = confirm_served(
                    {item.token: item.key_authorization for item in http},
                    responders,
                    self.settings.serve_deadline_s,
                )
                log.info("challenges served by %s", ", ".join(f"{k} ({v:.2f}s)" for k, v in took.items()))
            else:
                log.warning("no server advertises a live HTTP-01 responder: skipping the self-check")

    def cleanup(self, items: Sequence[PendingChallenge]) -> None:
        """Delete the challenge documents written and the TXT values added; other records stay."""
        first_error: Exception | None = None
        for doc_id in list(self._written):
            try:
                current = self.db.get_or_none(doc_id)
                if current is not None:
                    self.db.delete(doc_id, current["_rev"])
                self._written.remove(doc_id)
            except Exception as exc:  # noqa: BLE001 - try every cleanup, report the first failure
                first_error = first_error or exc
        for provider, records in self._dns_records([i for i in items if i.type == DNS01]):
            try:
                provider.cleanup(records)
            except Exception as exc:  # noqa: BLE001
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    # --- internals ----------------------------------------------------------------------------

    def _publish_http(self, items: Sequence[PendingChallenge]) -> None:
        expires = self.clock() + self.settings.challenge_ttl
        docs = [
            AcmeChallenge(
                token=item.token,
                key_authorization=item.key_authorization,
                hostnames=[item.identifier],
                expires=expires,
                credential=self.credential.name,
            ).to_doc()
            for item in items
        ]
        results = self.db.bulk_docs(docs)
        for doc, result in zip(docs, results, strict=True):
            if "error" in result:
                raise ChallengeSetupError(
                    f"could not publish {doc['_id']}: {result.get('error')}: {result.get('reason')}"
                )
            self._written.append(doc["_id"])

    def _dns_records(self, items: Sequence[PendingChallenge]) -> list[tuple[DnsProvider, list[TxtRecord]]]:
        grouped: dict[int, tuple[DnsProvider, list[TxtRecord]]] = {}
        for item in items:
            provider = self.provider_for_name(item.identifier)
            if provider is None:  # choose() made sure there is one
                raise ChallengeSetupError(f"no DNS provider serves {item.identifier}")
            grouped.setdefault(id(provider), (provider, []))[1].append(
                challenge_record(item.identifier, item.validation)
            )
        return list(grouped.values())
