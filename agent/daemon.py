"""Run the per-host agent until SIGTERM/SIGINT: the body of ``certstore agent run``.

Kept free of the command-line libraries (typer, click, rich, pydantic) so that the process that runs
on every host for months carries only what the agent uses; :mod:`agent.main` calls it straight from
the command line, and :mod:`agent.cli_agent` from the typer command.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

from agent.config import load_config
from agent.hostagent import HostAgent, open_database


def run_agent(config_path: Path) -> None:
    """Load the config, then follow, deploy and answer challenges until a signal asks to stop.

    Raises what the agent's loop raised (a :class:`store.errors.CertstoreError` for anything the
    admin can fix), after stopping it.
    """
    settings = load_config(config_path)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent = HostAgent(settings, open_database(settings))
    failure: list[BaseException] = []

    def work() -> None:
        try:
            agent.run(stop)
        except Exception as exc:  # noqa: BLE001 - re-raised in the main thread, where it is reported
            failure.append(exc)

    # The follower blocks in a read; run it in a thread so a signal ends it promptly.
    worker = threading.Thread(target=work, name="agent", daemon=True)
    worker.start()
    while worker.is_alive() and not stop.wait(0.5):
        pass
    stop.set()
    if agent.follower is not None:
        agent.follower.stop()
    worker.join(30)
    if failure:
        raise failure[0]
