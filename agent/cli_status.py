"""``certstore status``: the fleet at a glance (credentials with a health light, deployments, servers)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from agent import fleet_status
from agent.cli_options import DEFAULT_DB, DbOpt, JsonOpt, UrlOpt, out
from agent.fleet_status import (
    CredentialStatus,
    DeployState,
    FleetStatus,
    Light,
    ServerStatus,
    Thresholds,
    human_duration,
)
from agent.renewal import utcnow
from store.couch import CouchClient

_LIGHT_STYLE = {Light.GREEN: "green", Light.YELLOW: "yellow", Light.RED: "bold red"}
_DEPLOY_STYLE = {
    DeployState.CURRENT: "green",
    DeployState.OUTDATED: "yellow",
    DeployState.MISSING: "yellow",
    DeployState.ERROR: "bold red",
    DeployState.NO_ACCESS: "dim",
}
_SERIAL_SHOWN = 12


def status_cmd(
    url: UrlOpt,
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
    expiry_days: Annotated[
        float, typer.Option(min=0, help="Red when a certificate expires within this many days.")
    ] = fleet_status.DEFAULT_EXPIRY_WARNING.days,
    stale_minutes: Annotated[
        float, typer.Option(min=0, help="Flag a server whose last heartbeat is older than this.")
    ] = fleet_status.DEFAULT_STALE_AFTER.total_seconds() / 60,
) -> None:
    """The fleet at a glance: every credential's light, which server holds which serial, heartbeats."""
    thresholds = Thresholds(
        expiry_warning=timedelta(days=expiry_days), stale_after=timedelta(minutes=stale_minutes)
    )
    with CouchClient(url) as client:
        status = fleet_status.collect(client.db(db), utcnow(), thresholds)
    if as_json:
        # Plain text: a status message must never be read as rich markup or emoji codes.
        out.print(
            json.dumps(fleet_status.to_json(status), indent=2), markup=False, emoji=False, highlight=False
        )
        return
    render(status)


def _relative(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    if moment >= now:
        return f"in {human_duration(moment - now)}"
    return f"{human_duration(now - moment)} ago"


def _expiry(moment: datetime | None, now: datetime) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d} ({_relative(moment, now)})"


def _short(serial: str | None) -> str:
    # CA serials run to 36 hex digits; the first 12 tell certificates apart (--json has them whole).
    if serial is None:
        return "-"
    return serial if len(serial) <= _SERIAL_SHOWN else serial[:_SERIAL_SHOWN] + "…"


def _table(title: str, *columns: str) -> Table:
    """A table whose cells wrap whole words or fold long names, never cut them off with an ellipsis."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _credentials_table(status: FleetStatus) -> Table:
    table = _table("Credentials", "", "credential", "status", "names", "expires", "serial")
    for credential in status.credentials:
        style = _LIGHT_STYLE[credential.light]
        table.add_row(
            Text("●", style=style),
            Text(credential.name, style=style),
            credential.status_text,
            "\n".join(credential.hostnames),
            _expiry(credential.not_after, status.now),
            _short(credential.serial),
        )
    return table


def _deployments_table(status: FleetStatus) -> Table:
    table = _table("Deployments", "credential", "server", "state", "serial", "deployed", "live check")
    for credential in status.credentials:
        for deployment in credential.deployments:
            state = Text(deployment.state.value, style=_DEPLOY_STYLE[deployment.state])
            if deployment.error:
                state.append(f": {deployment.error}")
            live = Text({None: "-", True: "ok", False: "failed"}[deployment.live_check_ok])
            if deployment.live_check_message and deployment.live_check_ok is False:
                live.append(f": {deployment.live_check_message}")
            table.add_row(
                credential.name,
                deployment.server,
                state,
                _short(deployment.serial),
                _relative(deployment.deployed_at, status.now),
                live,
            )
    return table


def _heartbeat(server: ServerStatus) -> Text:
    if server.heartbeat_age is None:
        return Text("never", style="yellow")
    age = human_duration(server.heartbeat_age) + " ago"
    return Text(age + (" (stale)" if server.stale else ""), style="yellow" if server.stale else "green")


def _servers_table(status: FleetStatus) -> Table:
    table = _table("Servers", "server", "roles", "heartbeat", "agent", "key")
    for server in status.servers:
        table.add_row(
            server.name,
            ", ".join(server.roles) or "-",
            _heartbeat(server),
            Text(server.agent_version or "-"),
            "enrolled" if server.enrolled else Text("not enrolled", style="yellow"),
        )
    return table


def _reasons(credential: CredentialStatus) -> str:
    message = f" ({credential.status_message})" if credential.status_message else ""
    return f"{credential.name}: {'; '.join(credential.reasons)}{message}"


def render(status: FleetStatus) -> None:
    """Print the status as rich tables, then a line per credential that is not green."""
    if not status.credentials:
        out.print("no credentials yet: add one with `certstore credential add` or in Fauxton")
    else:
        out.print(_credentials_table(status))
        if any(credential.deployments for credential in status.credentials):
            out.print(_deployments_table(status))
    if status.servers:
        out.print(_servers_table(status))
    for credential in status.credentials:
        if credential.light is not Light.GREEN:
            out.print(Text(_reasons(credential), style=_LIGHT_STYLE[credential.light]))
    for item in status.invalid:
        out.print(Text(f"skipped invalid document {item.message}", style="yellow"))
    summary = ", ".join(f"{status.count(light)} {light.value}" for light in Light)
    out.print(f"{len(status.credentials)} credentials ({summary}), {len(status.servers)} servers")
