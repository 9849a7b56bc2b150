"""The ``certstore`` command line: thin typer commands over plain functions.

Errors become messages and exit codes in one place, :func:`agent.main.report_errors`: a
:class:`CertstoreError` prints one line on stderr and exits 1; nothing prints a traceback at a user.
The console script is :func:`agent.main.main`, which sends ``certstore agent run`` past this module.

The command groups live in their own modules and are imported only when used (:class:`LazyGroup`):
``certstore agent run`` must not carry the certmgr's ACME client, DNS libraries and rich tables in
the memory of every host.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Annotated, Any

import typer
import typer.main
from typer._click import Command
from typer.core import TyperGroup

from agent import __version__
from agent.cli_options import DEFAULT_DB, DbOpt, JsonOpt, UrlOpt, out
from agent.main import configure_logging, report_errors
from store.couch import CouchClient

#: The commands defined in other modules: name -> (module, attribute: a Typer group or a command
#: function, help replacing the group's own).
LAZY_COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "demo": ("agent.cli_demo", "demo_cmd", None),
    "status": ("agent.cli_status", "status_cmd", None),
    "dev": (
        "agent.cli_dev",
        "dev_app",
        "Run the local services (pouchdb-server, pebble, DNS) for demos and tests.",
    ),
    "server": ("agent.cli_server", "server_app", None),
    "credential": ("agent.cli_admin", "credential_app", None),
    "account": ("agent.cli_admin", "account_app", None),
    "dns": ("agent.cli_admin", "dns_app", None),
    "certmgr": ("agent.cli_certmgr", "certmgr_app", None),
    "agent": ("agent.cli_agent", "agent_app", None),
}
#: ``certstore --help`` order; ``init`` and ``replicate`` are defined in this module.
COMMAND_ORDER = (
    "demo",
    "status",
    "init",
    "dev",
    "server",
    "credential",
    "account",
    "dns",
    "certmgr",
    "agent",
    "replicate",
)


def _load_command(name: str) -> Command:
    module, attribute, help_text = LAZY_COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    command: Command
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    if help_text is not None:
        command.help = help_text
    return command


class _Commands(MutableMapping[str, Command]):
    """The root's commands: the ones built here, and the others imported the first time they are read."""

    def __init__(self, built: MutableMapping[str, Command]) -> None:
        self._built = dict(built)

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            if name not in LAZY_COMMANDS:
                raise KeyError(name)
            self._built[name] = _load_command(name)
        return self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in self._built or name in LAZY_COMMANDS

    def __iter__(self) -> Iterator[str]:
        names = [*LAZY_COMMANDS, *(name for name in self._built if name not in LAZY_COMMANDS)]
        last = len(COMMAND_ORDER)
        return iter(sorted(names, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER else last))

    def __len__(self) -> int:
        return len(set(self._built) | set(LAZY_COMMANDS))

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]


class LazyGroup(TyperGroup):
    """The root command group, whose command groups are imported on first use (see LAZY_COMMANDS)."""

    def __init__(self, *, commands: Any = None, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(dict(commands or {}))


app = typer.Typer(
    name="certstore",
    help="A replicated TLS-certificate store for fleets of servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=LazyGroup,
)
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
    configure_logging(verbose)


@app.command("init")
def init_cmd(url: UrlOpt, db: DbOpt = DEFAULT_DB) -> None:
    """Create the database, install the design document, set _security, write default settings."""
    from store import provision

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
        typer.Option(
            help="The server this replica belongs to: it then skips the other servers' reports and "
            "sends back only its own."
        ),
    ] = None,
    on: Annotated[
        str, typer.Option(help="Which server runs the replication: 'replica' (default) or 'hub'.")
    ] = "replica",
    push_all: Annotated[
        bool,
        typer.Option(
            "--push-all",
            help="With --server: send every document written on the replica to the hub (the certmgr "
            "or admins write there), not only the server's own server: and deploy: documents.",
        ),
    ] = False,
) -> None:
    """Replicate continuously hub → replica and replica → hub."""
    from store import replication

    hub_end = replication.Endpoint(hub, hub_db)
    replica_end = replication.Endpoint(replica, replica_db)
    if on not in ("replica", "hub"):
        raise typer.BadParameter("must be 'replica' or 'hub'", param_hint="--on")
    if push_all and server is None:
        raise typer.BadParameter(
            "only with --server (without it everything is replicated)", param_hint="--push-all"
        )
    with CouchClient(replica if on == "replica" else hub) as client:
        ids = replication.add(client, hub_end, replica_end, name, server=server, push_all=push_all)
    out.print(f"replicating {hub_end.shown()} <-> {replica_end.shown()} ({', '.join(ids)})")


@replicate_app.command("list")
def replicate_list(url: UrlOpt, as_json: JsonOpt = False) -> None:
    """List the replications certstore manages on a server."""
    from rich.table import Table

    from store import replication

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
    from store import replication

    with CouchClient(url) as client:
        removed = replication.remove(client, name)
    out.print(f"removed {', '.join(removed)}")


def main(args: Sequence[str] | None = None) -> None:
    """Run the typer app on ``args`` (default: the command line), certstore errors as one line."""
    report_errors(lambda: app(args=None if args is None else list(args)))


if __name__ == "__main__":
    main()
