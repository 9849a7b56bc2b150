"""``certstore agent``: run the per-host agent, and show what this host holds.

Thin commands over :mod:`agent.hostagent` and :func:`agent_status` (a plain function returning a
dict, so tests and scripts need no CLI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent import __version__
from agent.cli_options import JsonOpt, out
from agent.config import AgentConfig, load_config
from agent.daemon import run_agent
from agent.keyring import Keyring, read_meta
from agent.paths import AgentPaths
from store import ids
from store.couch import CouchClient
from store.errors import CertstoreError

agent_app = typer.Typer(help="The per-host agent: deploy this server's certificates.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="The agent's TOML config file.", envvar="CERTSTORE_AGENT_CONFIG"),
]


@agent_app.command("run")
def run_cmd(config: ConfigOpt) -> None:
    """Follow the database, deploy this server's keyrings, answer HTTP-01, until SIGTERM/SIGINT."""
    # `certstore agent run` itself goes to run_agent without typer (agent.main); this is the same
    # command reached through the full command line (e.g. with `--help` resolved first).
    run_agent(config)


def agent_status(config: AgentConfig, *, query_db: bool = True, timeout: float = 5.0) -> dict[str, Any]:
    """What this host holds (from its data and state directories, so it works offline), what the agent
    last reported, and, if the database answers, its ``server:`` and ``deploy:`` documents."""
    paths = AgentPaths.create(config.data_dir, config.state_dir)
    keyring = Keyring(paths)
    held: dict[str, Any] = {}
    for keyfile in keyring.live_keyfiles():
        version = keyring.current(keyfile)
        meta = (read_meta(version) if version is not None else None) or {}
        held[keyfile] = {
            "credential": meta.get("credential"),
            "serial": meta.get("serial"),
            "names": meta.get("names"),
            "not_after": meta.get("not_after"),
            "fingerprint_sha256": meta.get("fingerprint_sha256"),
            "deployed_at": meta.get("deployed_at"),
            "version": version.name if version is not None else None,
            "versions": [v.name for v in keyring.versions(keyfile)],
            "live_dir": str(paths.live_link(keyfile)),
            "problems": keyring.live_problems(keyfile),
        }
    try:
        agent_file = json.loads(paths.status_file.read_text())
    except (OSError, ValueError):
        agent_file = None
    result: dict[str, Any] = {
        "server": config.server,
        "data_dir": str(paths.data_dir),
        "held": held,
        "agent": agent_file,
        "database": None,
    }
    if query_db:
        result["database"] = _database_view(config, timeout)
    return result


def _database_view(config: AgentConfig, timeout: float) -> dict[str, Any]:
    try:
        with CouchClient(
            config.url, user=config.user, password=config.password, timeout=timeout, backoff=()
        ) as client:
            db = client.db(config.db)
            server = db.get_or_none(ids.server_id(config.server))
            prefix = f"deploy:{config.server}:"
            rows = db.all_docs(startkey=prefix, endkey=prefix + "\ufff0", include_docs=True)["rows"]
    except CertstoreError as exc:
        return {"reachable": False, "error": str(exc)}
    deploys = {}
    for row in rows:
        doc = row.get("doc") or {}
        deploys[row["id"].removeprefix(prefix)] = {
            k: doc.get(k)
            for k in ("state", "serial", "deployed_at", "error", "hook_result", "live_check", "drift_repairs")
        }
    return {
        "reachable": True,
        "url": f"{config.url}/{config.db}",
        "heartbeat": (server or {}).get("heartbeat"),
        "agent_version": (server or {}).get("agent_version"),
        "responder_url": (server or {}).get("responder_url"),
        "deployments": deploys,
    }


@agent_app.command("status")
def status_cmd(
    config: ConfigOpt,
    as_json: JsonOpt = False,
    offline: Annotated[bool, typer.Option("--offline", help="Do not ask the database.")] = False,
) -> None:
    """What this host holds (works offline), the agent's last results, and what the database says."""
    report = agent_status(load_config(config), query_db=not offline)
    if as_json:
        out.print_json(json.dumps(report))
        return
    out.print(f"server {report['server']} (certstore {__version__}), data dir {report['data_dir']}")
    agent = report["agent"] or {}
    if agent:
        out.print(
            f"agent: pid {agent.get('pid')}, status written {agent.get('updated_at')}, "
            f"drift repairs {agent.get('drift_repairs')}"
        )
    if not report["held"]:
        out.print("holds no certificates")
    for keyfile, item in report["held"].items():
        state = "ok" if not item["problems"] else "DAMAGED: " + "; ".join(item["problems"])
        out.print(
            f"{keyfile}: credential {item['credential']}, serial {item['serial']}, not after "
            f"{item['not_after']}, version {item['version']} ({len(item['versions'])} kept), {state}"
        )
    for name, cred in (agent.get("credentials") or {}).items():
        if cred.get("error"):
            out.print(f"{name}: {cred.get('state')}: {cred['error']}")
    db = report["database"]
    if db is not None:
        if not db["reachable"]:
            out.print(f"database unreachable: {db['error']}")
        else:
            out.print(f"database {db['url']}: heartbeat {db['heartbeat']}, responder {db['responder_url']}")
            for name, dep in db["deployments"].items():
                tail = f", error: {dep['error']}" if dep.get("error") else ""
                out.print(f"  deploy {name}: {dep.get('state')} serial {dep.get('serial')}{tail}")
