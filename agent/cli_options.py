"""Options shared by the ``certstore`` commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

#: Standard output for every command; soft wrap keeps long lines whole for scripts.
out = Console(soft_wrap=True, highlight=False)

UrlOpt = Annotated[
    str,
    typer.Option(
        "--url",
        help="CouchDB server URL, credentials allowed: http://user:pw@host:5984",
        envvar="CERTSTORE_URL",
    ),
]
DbOpt = Annotated[str, typer.Option("--db", help="Database name.", envvar="CERTSTORE_DB")]
StateDirOpt = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        help="This host's state directory (holds the private host key, mode 0600).",
        envvar="CERTSTORE_STATE_DIR",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

DEFAULT_DB = "certstore"
DEFAULT_STATE_DIR = Path("/var/lib/certstore")
