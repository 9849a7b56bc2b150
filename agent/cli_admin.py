"""``certstore credential|account|dns …``: the admin's documents, written through the models."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agent import admin
from agent.cli_options import DEFAULT_DB, DbOpt, JsonOpt, UrlOpt, out
from store import ids
from store.couch import CouchClient
from store.documents import TlsCredentialState

credential_app = typer.Typer(
    help="Certificate requests (credential:<name>) and actions on them.", no_args_is_help=True
)
account_app = typer.Typer(help="ACME accounts (account:<name>).", no_args_is_help=True)
dns_app = typer.Typer(help="DNS-01 providers (dns:<name>).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The document's name (lowercase, e.g. web).")]
ReplaceOpt = Annotated[bool, typer.Option("--replace", help="Overwrite an existing document.")]


@credential_app.command("add")
def credential_add(
    name: NameArg,
    url: UrlOpt,
    host: Annotated[list[str], typer.Option("--host", help="A host name (repeat; Unicode allowed).")],
    server: Annotated[
        list[str] | None, typer.Option("--server", help="A server with access to the key (repeat).")
    ] = None,
    account: Annotated[str | None, typer.Option(help="ACME account (default: settings).")] = None,
    challenge: Annotated[str | None, typer.Option(help="auto, http-01 or dns-01.")] = None,
    key_type: Annotated[
        str | None, typer.Option(help="ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096.")
    ] = None,
    keyfile: Annotated[str | None, typer.Option(help="Keyring file name on the servers.")] = None,
    reload_hook: Annotated[str | None, typer.Option(help="Reload hook tag the agents run.")] = None,
    profile: Annotated[str | None, typer.Option(help="ACME certificate profile.")] = None,
    live_check: Annotated[
        str | None, typer.Option(help="host:port the agents check after deploying.")
    ] = None,
    replace: ReplaceOpt = False,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Request a certificate: the certmgr issues it and the servers with access deploy it."""
    with CouchClient(url) as client:
        credential = admin.add_credential(
            client.db(db),
            name,
            host,
            servers=server or [],
            account=account,
            challenge=challenge,
            key_type=key_type,
            keyfile=keyfile,
            reload_hook=reload_hook,
            profile=profile,
            live_check=live_check,
            replace=replace,
        )
    out.print(f"requested {credential.doc_id} for {', '.join(credential.hostnames)}")


def _action(name: str, url: str, db: str, action: str, reason: str | None = None) -> None:
    with CouchClient(url) as client:
        admin.request_action(client.db(db), name, action, reason=reason)
    out.print(f"asked the certmgr to {action} {ids.credential_id(name)}")


@credential_app.command("renew")
def credential_renew(name: NameArg, url: UrlOpt, db: DbOpt = DEFAULT_DB) -> None:
    """Renew now (same key)."""
    _action(name, url, db, "renew")


@credential_app.command("rekey")
def credential_rekey(name: NameArg, url: UrlOpt, db: DbOpt = DEFAULT_DB) -> None:
    """Replace a compromised key: new key, new certificate, the old one revoked."""
    _action(name, url, db, "rekey")


@credential_app.command("revoke")
def credential_revoke(
    name: NameArg,
    url: UrlOpt,
    reason: Annotated[
        str, typer.Option(help="RFC 5280 reason, e.g. keyCompromise, superseded.")
    ] = "unspecified",
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Revoke the current certificate."""
    _action(name, url, db, "revoke", reason)


@credential_app.command("show")
def credential_show(name: NameArg, url: UrlOpt, as_json: JsonOpt = False, db: DbOpt = DEFAULT_DB) -> None:
    """The request and what the certmgr made of it (status, message, serial, expiry)."""
    with CouchClient(url) as client:
        database = client.db(db)
        request = database.get(ids.credential_id(name))
        state_doc = database.get_or_none(ids.credential_state_id(name))
    state = TlsCredentialState.from_doc(state_doc) if state_doc else None
    if as_json:
        out.print(json.dumps({"request": request, "state": state_doc}, indent=2))
        return
    out.print(f"{ids.credential_id(name)}: {', '.join(request.get('hostnames', []))}")
    if state is None:
        out.print("status: (the certmgr has not picked it up yet)")
        return
    out.print(f"status: {state.status.value}")
    if state.status_message:
        out.print(f"message: {state.status_message}")
    if state.serial:
        out.print(f"serial: {state.serial}, valid until {state.not_after}, renewal from {state.next_renewal}")


@account_app.command("add")
def account_add(
    name: NameArg,
    url: UrlOpt,
    directory: Annotated[str, typer.Option(help="ACME directory URL, or letsencrypt / letsencrypt-staging.")],
    email: Annotated[str | None, typer.Option(help="Contact e-mail for the CA.")] = None,
    agree_tos: Annotated[
        bool, typer.Option("--agree-tos", help="Agree to the CA's terms of service.")
    ] = False,
    eab_kid: Annotated[str | None, typer.Option(help="External Account Binding key id.")] = None,
    eab_hmac: Annotated[
        str | None,
        typer.Option(help="EAB HMAC key (base64url); sealed for the certmgr.", envvar="CERTSTORE_EAB_HMAC"),
    ] = None,
    replace: ReplaceOpt = False,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Describe an ACME account; the certmgr registers it on first use."""
    with CouchClient(url) as client:
        account = admin.add_account(
            client.db(db),
            name,
            directory,
            email=email,
            agree_tos=agree_tos,
            eab_kid=eab_kid,
            eab_hmac=eab_hmac,
            replace=replace,
        )
    out.print(f"wrote {account.doc_id} ({account.directory_url})")


@account_app.command("rollover")
def account_rollover(name: NameArg, url: UrlOpt, db: DbOpt = DEFAULT_DB) -> None:
    """Replace the account's key at the CA (the certmgr does it once and records it)."""
    with CouchClient(url) as client:
        admin.request_rollover(client.db(db), name)
    out.print(f"asked the certmgr to roll over the key of {ids.account_id(name)}")


@dns_app.command("add")
def dns_add(
    name: NameArg,
    url: UrlOpt,
    kind: Annotated[str, typer.Option(help="rfc2136, lexicon or exec.")],
    zone: Annotated[list[str], typer.Option("--zone", help="A zone this provider serves (repeat).")],
    option: Annotated[
        list[str] | None, typer.Option("--option", help="KEY=VALUE setting, e.g. server=ns1:53 (repeat).")
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", help="KEY=VALUE credential, sealed for the certmgr (repeat)."),
    ] = None,
    replace: ReplaceOpt = False,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Describe a DNS provider; names under its zones are validated over DNS-01."""
    with CouchClient(url) as client:
        provider = admin.add_dns_provider(
            client.db(db),
            name,
            kind,
            zone,
            options=admin.parse_pairs(option or [], "--option"),
            secrets=admin.parse_pairs(secret or [], "--secret"),
            replace=replace,
        )
    out.print(f"wrote {provider.doc_id} for {', '.join(provider.zones)}")
