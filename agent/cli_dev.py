"""`certstore dev`: start, inspect and stop the local services (pouchdb-server nodes, pebble, DNS)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from store import localservices
from store.localservices import DevState

dev_app = typer.Typer(help="Local services for development: CouchDB nodes, pebble (ACME CA) and its DNS.")
console = Console()

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir", help="Directory holding the services' data and state.json.", envvar="CERTSTORE_DEV_DIR"
    ),
]
DEFAULT_DIR = Path(".certstore-dev")


def status_json(state: DevState) -> dict[str, Any]:
    """What `dev status --json` prints: every node's URLs, pebble's directory and CA file, liveness."""
    pebble = state.pebble
    return {
        "dir": str(state.dir),
        "external_couchdb": state.external_couchdb,
        "nodes": [
            {
                "name": node.name,
                "url": node.url,
                "admin_url": node.admin_url,
                "db_prefix": node.db_prefix,
                "pid": node.pid,
                "alive": state.alive.get(node.name, False),
            }
            for node in state.nodes
        ],
        "pebble": None
        if pebble is None
        else {
            "directory_url": pebble.directory_url,
            "ca_file": str(pebble.ca_file),
            "management_url": pebble.management_url,
            "http_port": pebble.http_port,
            "tls_port": pebble.tls_port,
            "dns_server": pebble.dns_server,
            "pid": pebble.process.pid if pebble.process else None,
            "alive": state.alive.get("pebble", False),
        },
        "challtestsrv": None
        if state.challtestsrv is None
        else {
            "dns_address": state.challtestsrv.dns_address,
            "management_url": state.challtestsrv.management_url,
            "alive": state.alive.get("challtestsrv", False),
        },
    }


def _print_state(state: DevState) -> None:
    if not state.services():
        console.print(f"nothing is running from {state.dir}")
        return
    table = Table("service", "state", "address", "details")
    for node in state.nodes:
        alive = "[green]up[/]" if state.alive.get(node.name) else "[red]down[/]"
        details = f"admin {node.admin_user}" + (f", db prefix {node.db_prefix!r}" if node.db_prefix else "")
        table.add_row(node.name, alive, node.url, details)
    if state.challtestsrv is not None:
        alive = "[green]up[/]" if state.alive.get("challtestsrv") else "[red]down[/]"
        table.add_row("challtestsrv", alive, f"dns {state.challtestsrv.dns_address}", "all names → 127.0.0.1")
    if state.pebble is not None:
        alive = "[green]up[/]" if state.alive.get("pebble") else "[red]down[/]"
        details = f"CA {state.pebble.ca_file}, HTTP-01 on port {state.pebble.http_port}"
        table.add_row("pebble", alive, state.pebble.directory_url, details)
    console.print(table)


@dev_app.command()
def up(
    directory: DirOption = DEFAULT_DIR,
    nodes: Annotated[int, typer.Option(help="How many CouchDB nodes (replicas).", min=1)] = 2,
    couchdb_url: Annotated[
        str | None,
        typer.Option(
            help="Admin URL of an external CouchDB (http://user:pw@host:port): no pouchdb-server is started.",
            envvar=localservices.COUCHDB_URL_ENV,
        ),
    ] = None,
    pebble_http_port: Annotated[
        int | None,
        typer.Option(help="Port pebble validates HTTP-01 on (the agent's responder listens there).", min=1),
    ] = None,
) -> None:
    """Start the services (installing what is missing); services already running are kept."""
    localservices.ensure_installed(npm=couchdb_url is None)
    state = localservices.dev_up(directory, nodes, couchdb_url=couchdb_url, pebble_http_port=pebble_http_port)
    _print_state(state)


@dev_app.command()
def status(
    directory: DirOption = DEFAULT_DIR,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (URLs with and without credentials).")
    ] = False,
) -> None:
    """Show what `dev up` started in DIR and whether each service is alive."""
    state = localservices.dev_status(directory)
    if as_json:
        typer.echo(json.dumps(status_json(state), indent=2))
    else:
        _print_state(state)


@dev_app.command()
def down(directory: DirOption = DEFAULT_DIR) -> None:
    """Stop the services `dev up` started in DIR (only those); their data stays."""
    stopped = localservices.dev_down(directory)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing was running from {directory}")


@dev_app.command()
def install(
    for_tests: Annotated[
        bool, typer.Option("--for-tests", help="Also what only the test suite uses (PowerDNS).")
    ] = False,
) -> None:
    """Install pouchdb-server (patched), pebble and BIND9 if they are missing."""
    done = localservices.ensure_installed(for_tests=for_tests)
    console.print(f"installed: {', '.join(done)}" if done else "everything was already installed")
