"""``certstore server …``: a host's identity (enroll, rotate-key) and its CouchDB user (add-user)."""

from __future__ import annotations

from typing import Annotated

import typer

from agent.cli_options import DEFAULT_DB, DEFAULT_STATE_DIR, DbOpt, StateDirOpt, UrlOpt, out
from store.couch import CouchClient
from store.enrollment import CERTMGR_ROLE, create_server_user, enroll, rotate_key

server_app = typer.Typer(
    help="Server identities: enroll a host, rotate its key, create its user.", no_args_is_help=True
)
NameArg = Annotated[str, typer.Argument(help="The server's name (lowercase, e.g. web1).")]


@server_app.command("enroll")
def enroll_cmd(
    name: NameArg,
    url: UrlOpt,
    db: DbOpt = DEFAULT_DB,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    certmgr: Annotated[
        bool, typer.Option("--certmgr", help="This host runs the certmgr (secrets are sealed for it).")
    ] = False,
) -> None:
    """Run on the host: make its key pair (once) and publish the public key as server:NAME."""
    with CouchClient(url) as client:
        result = enroll(client.db(db), name, state_dir, roles=[CERTMGR_ROLE] if certmgr else [])
    messages = {
        "published": f"enrolled server {name}: published key {result.key_id}",
        "key-added": f"enrolled server {name}: added key {result.key_id} to the existing server:{name}",
        "unchanged": f"server {name} is already enrolled with this host's key {result.key_id}",
        "roles-added": f"server {name} is enrolled with key {result.key_id}; roles updated",
    }
    out.print(messages[result.action])
    out.print(f"private key: {result.key_file} (0600, never leaves this host)")


@server_app.command("rotate-key")
def rotate_cmd(
    name: NameArg, url: UrlOpt, db: DbOpt = DEFAULT_DB, state_dir: StateDirOpt = DEFAULT_STATE_DIR
) -> None:
    """Replace this host's key pair and publish the new public key (credentials it held are re-keyed)."""
    with CouchClient(url) as client:
        result = rotate_key(client.db(db), name, state_dir)
    before = f" (was {result.previous_key_id})" if result.previous_key_id else ""
    out.print(
        f"server {name}: new key {result.key_id}{before}; the old key file is kept as a backup",
        highlight=False,
    )


@server_app.command("add-user")
def add_user_cmd(
    name: NameArg,
    url: UrlOpt,
    reset_password: Annotated[
        bool, typer.Option("--reset-password", help="Give an existing user a new password.")
    ] = False,
    certmgr: Annotated[
        bool, typer.Option("--certmgr", help="This server runs the certmgr (adds its role).")
    ] = False,
) -> None:
    """Admin: create the CouchDB user of server NAME and print its credentials once."""
    with CouchClient(url) as client:
        creds = create_server_user(client, name, reset=reset_password, certmgr=certmgr)
    out.print(f"user:     {creds.user}")
    out.print(f"password: {creds.password}")
    out.print(f"roles:    {', '.join(creds.roles)}")
    out.print(
        "This password is shown once and stored nowhere: put it in the host's agent config now.",
        highlight=False,
    )
