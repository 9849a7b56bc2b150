"""Options shared by the ``certstore`` commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """rich's Console, made on first use: ``certstore agent run`` prints nothing with it, and a
    process that runs on every host for months should not carry rich for nothing."""

    def __init__(self) -> None:
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # Soft wrap keeps long lines whole for scripts.
            self._console = Console(soft_wrap=True, highlight=False)
        return self._console

    def print(self, *objects: Any, **options: Any) -> None:
        self.console.print(*objects, **options)

    def print_json(self, json: str | None = None, **options: Any) -> None:
        self.console.print_json(json, **options)


#: Standard output for every command.
out = LazyConsole()

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
