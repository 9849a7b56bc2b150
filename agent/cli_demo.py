"""``certstore demo``: the whole fleet on this machine (see :mod:`agent.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli_certmgr import stop_on_signals
from agent.cli_options import out
from agent.demo import run_demo


def demo_cmd(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", help="Where the demo keeps its services and files.", envvar="CERTSTORE_DEMO_DIR"
        ),
    ] = Path(".demo"),
    once: Annotated[
        bool, typer.Option("--once", help="Stop when done; exit non-zero if anything failed (for CI).")
    ] = False,
) -> None:
    """Run a whole fleet here: hub + 3 replicas, pebble, BIND, the certmgr and 3 agents."""
    stop = stop_on_signals()
    if not run_demo(directory, once=once, console=out.console, stop=stop):
        raise typer.Exit(1)
