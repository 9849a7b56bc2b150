"""``certstore certmgr run``: the certificate manager (one active per fleet, others wait)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from agent.certmgr import Certmgr, CertmgrSettings
from agent.cli_options import DEFAULT_DB, DEFAULT_STATE_DIR, DbOpt, StateDirOpt, UrlOpt, out
from agent.solver import SolverSettings
from store.couch import CouchClient

certmgr_app = typer.Typer(
    help="The certificate manager: ACME orders, renewals, revocations.", no_args_is_help=True
)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so a daemon stops cleanly (and releases what it holds)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@certmgr_app.command("run")
def run_cmd(
    name: Annotated[str, typer.Argument(help="This host's server name (enrolled with --certmgr).")],
    url: UrlOpt,
    db: DbOpt = DEFAULT_DB,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="CA bundle for the ACME server's HTTPS certificate (e.g. pebble's).",
            envvar="CERTSTORE_ACME_CA_FILE",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Orders running at once.")] = 4,
    self_check: Annotated[
        bool,
        typer.Option(help="Confirm every live server serves an HTTP-01 token before answering the CA."),
    ] = True,
    serve_deadline: Annotated[
        float, typer.Option(help="Seconds to wait for servers to serve a token.")
    ] = 30.0,
    lease_ttl: Annotated[
        float, typer.Option(help="Seconds before a silent certmgr's lease is stale.")
    ] = 30.0,
    scan_interval: Annotated[float, typer.Option(help="Seconds between full scans (renewals).")] = 30.0,
) -> None:
    """Run the certmgr until stopped (Ctrl-C or SIGTERM)."""
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    settings = CertmgrSettings(
        name=name,
        state_dir=state_dir,
        ca_bundle=str(ca_file) if ca_file else None,
        workers=workers,
        solver=SolverSettings(self_check=self_check, serve_deadline_s=serve_deadline),
        lease_ttl=timedelta(seconds=lease_ttl),
        scan_interval_s=scan_interval,
    )
    stop = stop_on_signals()
    with CouchClient(url) as client:
        certmgr = Certmgr(client.db(db), settings)
        out.print(f"certmgr {name}: following {client.db(db).url} (Ctrl-C to stop)")
        certmgr.run(stop)
    out.print(f"certmgr {name}: stopped")
