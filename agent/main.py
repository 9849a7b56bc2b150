"""The ``certstore`` console script.

``certstore agent run --config FILE`` (the command every host runs for months) goes straight to
:func:`agent.daemon.run_agent` without importing the command-line libraries: typer, click and the
pydantic that typer pulls in cost about 12 MB of resident memory per host. Every other command line,
``--help`` and any option this fast path does not know included, goes to the typer app in
:mod:`agent.cli`, which gives the same errors and exit codes it always does.

This module is also where errors become messages and exit codes: a :class:`CertstoreError` prints
one line on stderr and exits 1; nothing prints a traceback at a user.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from store.errors import CertstoreError

#: The environment variable ``certstore agent run`` reads when ``--config`` is not given.
CONFIG_ENV = "CERTSTORE_AGENT_CONFIG"

_VERBOSE = ("-v", "--verbose")


def configure_logging(verbose: bool) -> None:
    """Log to stderr: debug with ``--verbose``, else warnings only."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # httpx logs every request at INFO, URLs included: keep it out of the user's log.
        logging.getLogger("httpx").setLevel(logging.WARNING)


def agent_run_request(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[bool, Path] | None:
    """``(verbose, config path)`` when ``argv`` is a plain ``[-v] agent run [--config FILE]``.

    None for anything else (help, a typo, a missing config), which the typer app then handles and
    explains exactly as it would have.
    """
    args = list(argv)
    verbose = False
    while args and args[0] in _VERBOSE:
        verbose = True
        args.pop(0)
    if args[:2] != ["agent", "run"]:
        return None
    rest = args[2:]
    config: str | None = None
    if not rest:
        config = environ.get(CONFIG_ENV) or None
    elif len(rest) == 2 and rest[0] in ("--config", "-c") and not rest[1].startswith("-"):
        config = rest[1]
    elif len(rest) == 1 and rest[0].startswith("--config=") and len(rest[0]) > len("--config="):
        config = rest[0].split("=", 1)[1]
    if not config:
        return None
    return verbose, Path(config)


def agent_run_command(config: Path) -> list[str]:
    """The argv that runs ``certstore agent run --config CONFIG`` with this interpreter, through this
    console script (for supervisors and benchmarks that start agents as processes)."""
    return [
        sys.executable,
        "-c",
        "from agent.main import main; main()",
        "agent",
        "run",
        "--config",
        str(config),
    ]


def report_errors(run: Callable[[], object]) -> None:
    """Call ``run``; a certstore error becomes one line on stderr and exit status 1, Ctrl-C 130."""
    try:
        run()
    except CertstoreError as exc:
        # One line, never wrapped, so scripts and admins can grep it.
        message = " ".join(str(exc).split()) or type(exc).__name__
        sys.stderr.write(f"certstore: error: {message}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    request = agent_run_request(args, os.environ)
    if request is None:
        from agent.cli import main as typer_main

        typer_main(args)
        return
    verbose, config = request

    def run() -> None:
        from agent.daemon import run_agent

        configure_logging(verbose)
        run_agent(config)

    report_errors(run)


if __name__ == "__main__":
    main()
