"""The ``certstore`` command line: thin typer commands over plain functions.

This is the only place where errors become messages and exit codes: a :class:`CertstoreError`
prints one line on stderr and exits 1; nothing prints a traceback at a user.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.table import Table

from agent import __version__
from agent.cli_admin import account_app, credential_app, dns_app
from agent.cli_agent import agent_app
from agent.cli_certmgr import certmgr_app
from agent.cli_demo import demo_cmd
from agent.cli_dev import dev_app
from agent.cli_options import DEFAULT_DB, DbOpt, JsonOpt, UrlOpt, out
from agent.cli_server import server_app
from agent.cli_status import status_cmd
from store import provision, replication
from store.couch import CouchClient
from store.errors import CertstoreError

app = typer.Typer(
    name="certstore",
    help="A replicated TLS-certificate store for fleets of servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(
    dev_app, name="dev", help="Run the local services (pouchdb-server, pebble, DNS) for demos and tests."
)
app.add_typer(server_app, name="server")
app.add_typer(credential_app, name="credential")
app.add_typer(account_app, name="account")
app.add_typer(dns_app, name="dns")
app.add_typer(certmgr_app, name="certmgr")
app.command("demo")(demo_cmd)
app.add_typer(agent_app, name="agent")
app.command("status")(status_cmd)
replicate_app = typer.Typer(
    help="Continuous replication between the hub and server replicas.", no_args_is_help=True
)
app.add_typer(replicate_app, name="replicate")


def _version(value: bool) -> None:
    if value:
        out.print(f"certstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (to stderr).")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # httpx logs every request at INFO, URLs included: keep it out of the user's log.
        logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command("init")
def init_cmd(url: UrlOpt, db: DbOpt = DEFAULT_DB) -> None:
    """Create the database, install the design document, set _security, write default settings."""
    with CouchClient(url) as client:
        report = provision.init_database(client, db)
    for line in report.lines():
        out.print(line)


@replicate_app.command("add")
def replicate_add(
    hub: Annotated[str, typer.Option(help="The hub's server URL (credentials allowed).")],
    replica: Annotated[str, typer.Option(help="The server replica's server URL (credentials allowed).")],
    hub_db: Annotated[str, typer.Option(help="The hub's database.")] = "certstore",
    replica_db: Annotated[str, typer.Option(help="The replica's database.")] = "certstore",
    name: Annotated[
        str | None, typer.Option(help="A name for this pair (default: derived from the URLs).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="The server this replica belongs to: it then skips the other servers' reports."),
    ] = None,
    on: Annotated[
        str, typer.Option(help="Which server runs the replication: 'replica' (default) or 'hub'.")
    ] = "replica",
) -> None:
    """Replicate continuously hub → replica and replica → hub."""
    hub_end = replication.Endpoint(hub, hub_db)
    replica_end = replication.Endpoint(replica, replica_db)
    if on not in ("replica", "hub"):
        raise typer.BadParameter("must be 'replica' or 'hub'", param_hint="--on")
    with CouchClient(replica if on == "replica" else hub) as client:
        ids = replication.add(client, hub_end, replica_end, name, server=server)
    out.print(f"replicating {hub_end.shown()} <-> {replica_end.shown()} ({', '.join(ids)})")


@replicate_app.command("list")
def replicate_list(url: UrlOpt, as_json: JsonOpt = False) -> None:
    """List the replications certstore manages on a server."""
    with CouchClient(url) as client:
        found = replication.list_replications(client)
    if as_json:
        out.print_json(data=[r.__dict__ for r in found])
        return
    table = Table("name", "direction", "source", "target", "state")
    for r in found:
        table.add_row(r.name, r.direction, r.source, r.target, r.state)
    out.print(table)


@replicate_app.command("remove")
def replicate_remove(url: UrlOpt, name: Annotated[str, typer.Argument(help="The pair's name.")]) -> None:
    """Stop and delete a replication pair."""
    with CouchClient(url) as client:
        removed = replication.remove(client, name)
    out.print(f"removed {', '.join(removed)}")


def main() -> None:
    """Console-script entry point: run the app and turn certstore errors into one-line messages."""
    try:
        app()
    except CertstoreError as exc:
        # One line, never wrapped, so scripts and admins can grep it.
        message = " ".join(str(exc).split()) or type(exc).__name__
        sys.stderr.write(f"certstore: error: {message}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
