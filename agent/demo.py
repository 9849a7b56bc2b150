"""``certstore demo``: a whole fleet on this machine, issuing real certificates from a local ACME CA.

What runs: a hub and three server replicas (pouchdb-server) replicating continuously, pebble (the
ACME CA) resolving names through a BIND authoritative for the demo zones, the certmgr on the hub,
and an agent per server (web1..web3), each with its own replica, data directory, HTTP-01 responder
on its own loopback address, and a small TLS server for the live check. Each server logs in as its
own CouchDB user, so the access rules are the production ones.

Two certificates are requested: a multi-SAN one over HTTP-01 (one IDN name among them; each name
resolves to a different server, so the CA's requests land on different agents) and a wildcard + apex
over DNS-01 through RFC 2136 with TSIG. The demo ends with a table of what each server holds.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import dns.query
import dns.rcode
from rich.console import Console
from rich.table import Table

from agent.admin import add_account, add_credential, add_dns_provider
from agent.certmgr import Certmgr, CertmgrSettings
from agent.config import AgentConfig, CredentialOptions
from agent.demo_tls import DemoTlsServer
from agent.hostagent import HostAgent
from agent.solver import SolverSettings
from store import ids, replication
from store.couch import CouchClient, Database
from store.documents import Deployment, Server, Settings, TlsCredentialState
from store.enrollment import CERTMGR_ROLE, create_server_user, enroll
from store.errors import ServiceError
from store.localservices import BindServer, DevState, dev_down, dev_up, ensure_installed, free_port
from store.names import Status, normalize_hostname
from store.provision import init_database

log = logging.getLogger(__name__)

DB = "certstore"
MARKER = ".certstore-demo"
SERVERS: dict[str, str] = {"web1": "127.0.0.11", "web2": "127.0.0.12", "web3": "127.0.0.13"}
HTTP_ZONE = "example.com"
DNS01_ZONE = "example.org"
#: Each HTTP-01 name resolves to one server: the CA's validation requests land on different agents.
HTTP_NAMES: dict[str, str] = {
    "www.example.com": "web1",
    "bücher.example.com": "web2",
    "shop.example.com": "web3",
}
WILDCARD_NAMES = ("*.example.org", "example.org")
CREDENTIALS: dict[str, tuple[str, ...]] = {"site": tuple(HTTP_NAMES), "wildcard": WILDCARD_NAMES}


@dataclass
class Running:
    """What the demo started in this process, stopped in reverse order."""

    stops: list[Callable[[], None]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def thread(self, name: str, target: Callable[[threading.Event], None]) -> threading.Event:
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        self.stops.append(stop.set)
        return stop

    def stop_all(self) -> None:
        for stop in reversed(self.stops):
            try:
                stop()
            except Exception:  # stopping one part must not keep the others running
                log.exception("stopping a demo part failed")
        for thread in self.threads:
            thread.join(15)


@dataclass(frozen=True)
class Holding:
    """One row of the final table."""

    server: str
    credential: str
    serial: str
    files: str
    live_check: str
    ok: bool


class Demo:
    """The fleet demo in ``directory`` (services, state and data directories all live there)."""

    def __init__(self, directory: Path, console: Console, *, timeout_s: float = 180.0) -> None:
        self.dir = directory.resolve()
        self.console = console
        self.timeout_s = timeout_s
        self.running = Running()
        self.services: DevState | None = None
        self.hub: Database | None = None
        self.agents: dict[str, HostAgent] = {}

    # --- the whole run --------------------------------------------------------------------------

    def run(self, *, once: bool, stop: threading.Event) -> bool:
        """Set up, issue, wait for every server to hold both certificates; keep running unless ``once``."""
        try:
            ok = self._run(stop)
            if ok and not once:
                self.console.print("\nThe fleet keeps running: press Ctrl-C to stop it.")
                stop.wait()
            return ok
        finally:
            self.console.print("stopping the fleet…")
            self.running.stop_all()
            if self.services is not None:
                dev_down(self.dir / "services")

    def _fresh_directory(self) -> None:
        """Start from a clean slate: a previous demo's files go (only a demo directory is touched)."""
        marker = self.dir / MARKER
        if self.dir.exists() and any(self.dir.iterdir()) and not marker.exists():
            raise ServiceError(
                f"{self.dir} is not empty and is not a certstore demo directory: use another --dir"
            )
        if marker.exists():
            dev_down(self.dir / "services")
            for child in self.dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != MARKER:
                    child.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        marker.write_text("created by `certstore demo`; the next demo run in this directory replaces it\n")

    def _run(self, stop: threading.Event) -> bool:
        self._fresh_directory()
        with self.console.status("installing what is missing (npm, Debian packages)…"):
            ensure_installed()
        with self.console.status("starting pouchdb-server (hub + 3 replicas), BIND and pebble…"):
            self.services = dev_up(self.dir / "services", nodes=4, dns_zones=(HTTP_ZONE, DNS01_ZONE))
        pebble, bind = self.services.pebble, self.services.bind
        if pebble is None or bind is None:
            raise ServiceError("the demo services did not start (see certstore dev status)")
        self._add_address_records(bind)
        hub_node, *replica_nodes = self.services.nodes
        hub_admin = CouchClient(hub_node.admin_url)
        init_database(hub_admin, DB)
        hub_user = create_server_user(hub_admin, "certmgr", reset=True, certmgr=True)
        self.hub = CouchClient(hub_node.url, user=hub_user.user, password=hub_user.password).db(DB)
        enroll(self.hub, "certmgr", self.dir / "certmgr" / "state", roles=[CERTMGR_ROLE])
        self.console.print(f"hub: {hub_node.url}/{DB} (certmgr enrolled)")

        for (server, address), node in zip(SERVERS.items(), replica_nodes, strict=True):
            self._set_up_server(
                server, address, node.url, node.admin_url, hub_node.admin_url, pebble.http_port
            )

        admin_hub = hub_admin.db(DB)
        add_account(
            admin_hub, "pebble", pebble.directory_url, email="admin@example.com", agree_tos=True, replace=True
        )
        self._default_account(admin_hub, "pebble")
        add_dns_provider(
            admin_hub,
            "example-org",
            "rfc2136",
            [DNS01_ZONE],
            options={
                "server": bind.address,
                "tsig_key_name": bind.tsig_key_name,
                "nameservers": [bind.address],
            },
            secrets={"tsig_secret": bind.tsig_secret},
            replace=True,
        )
        self._start_certmgr(str(pebble.ca_file))
        self._wait_for_heartbeats()
        for name, hostnames in CREDENTIALS.items():
            add_credential(admin_hub, name, hostnames, servers=list(SERVERS), replace=True)
            self.console.print(f"requested credential:{name} for {', '.join(hostnames)}")
        ok = self._follow_progress(stop)
        self._print_table()
        self._print_next_steps(hub_node.url, hub_node.admin_url)
        return ok

    # --- set-up steps ---------------------------------------------------------------------------

    def _add_address_records(self, bind: BindServer) -> None:
        """A records for the HTTP-01 names (each to its server's address) and the DNS-01 zone apex."""
        update = bind.update_message(HTTP_ZONE)
        for name, server in HTTP_NAMES.items():
            update.replace(normalize_hostname(name) + ".", 60, "A", SERVERS[server])
        # Any other name under the zone lands on web1: credentials an admin adds while the demo runs
        # validate there, whichever servers they are for (every agent serves every challenge).
        update.replace(f"*.{HTTP_ZONE}.", 60, "A", SERVERS["web1"])
        answer = dns.query.tcp(update, bind.host, port=bind.port, timeout=5)
        if answer.rcode() != dns.rcode.NOERROR:
            raise ServiceError(f"BIND refused the demo's A records: {dns.rcode.to_text(answer.rcode())}")

    def _set_up_server(
        self,
        server: str,
        address: str,
        node_url: str,
        node_admin_url: str,
        hub_admin_url: str,
        http_port: int,
    ) -> None:
        node_admin = CouchClient(node_admin_url)
        init_database(node_admin, DB)
        replication.add(
            node_admin,
            replication.Endpoint(hub_admin_url, DB),
            replication.Endpoint(node_admin_url, DB),
            name=server,
            server=server,
        )
        user = create_server_user(node_admin, server, reset=True)
        db = CouchClient(node_url, user=user.user, password=user.password).db(DB)
        home = self.dir / server
        enroll(db, server, home / "state")
        web = DemoTlsServer(address, free_port(), home / "data" / "live", self._keyfile_for)
        web.start()
        self.running.stops.append(web.stop)
        config = AgentConfig(
            server=server,
            url=node_url,
            db=DB,
            state_dir=home / "state",
            data_dir=home / "data",
            user=user.user,
            password=user.password,
            heartbeat_interval=5.0,
            responder_host=address,
            responder_port=http_port,
            credentials={name: CredentialOptions(live_check=f"{address}:{web.port}") for name in CREDENTIALS},
        )
        agent = HostAgent(config, db)
        self.agents[server] = agent
        self.running.thread(f"agent-{server}", agent.run)
        self.console.print(
            f"{server}: replica {node_url}/{DB}, responder {address}:{http_port}, files {home / 'data'}"
        )

    @staticmethod
    def _keyfile_for(server_name: str) -> str:
        return "wildcard" if server_name.endswith(DNS01_ZONE) else "site"

    def _default_account(self, db: Database, account: str) -> None:
        doc = db.get_or_none(ids.SETTINGS)
        settings = Settings.from_doc(doc) if doc is not None else Settings()
        if settings.default_account != account:
            settings.default_account = account
            db.put(settings.validated().to_doc())

    def _start_certmgr(self, ca_file: str) -> None:
        assert self.hub is not None
        certmgr = Certmgr(
            self.hub,
            CertmgrSettings(
                name="certmgr",
                state_dir=self.dir / "certmgr" / "state",
                ca_bundle=ca_file,
                solver=SolverSettings(serve_deadline_s=30.0, propagation_deadline_s=60.0),
                lease_ttl=timedelta(seconds=15),
            ),
        )
        self.running.thread("certmgr", certmgr.run)

    def _wait_for_heartbeats(self) -> None:
        assert self.hub is not None
        with self.console.status("waiting for every agent's heartbeat to reach the hub…"):
            self._wait(lambda: all(self._responder(s) is not None for s in SERVERS), "agents' heartbeats")

    def _wait(self, condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        """Poll ``condition`` until true; a ServiceError naming ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise ServiceError(f"the demo gave up waiting for the {what} after {timeout_s:.0f}s")
            time.sleep(0.1)

    def _responder(self, server: str) -> str | None:
        assert self.hub is not None
        doc = self.hub.get_or_none(ids.server_id(server))
        return Server.from_doc(doc).responder_url if doc is not None else None

    # --- watching -------------------------------------------------------------------------------

    def _follow_progress(self, stop: threading.Event) -> bool:
        """Print each change of status or deployment until every server holds both certificates."""
        assert self.hub is not None
        seen: dict[str, str] = {}
        start = time.monotonic()
        while not stop.is_set():
            lines = self._progress_lines()
            for key, line in lines.items():
                if seen.get(key) != line:
                    seen[key] = line
                    self.console.print(f"[{time.monotonic() - start:6.2f}s] {line}")
            if self._all_deployed():
                self.console.print(
                    f"every server holds both certificates after {time.monotonic() - start:.1f}s"
                )
                with self.console.status("waiting for the agents' live checks…"):
                    try:
                        self._wait(self._all_live_checked, "live checks", timeout_s=30.0)
                    except ServiceError as exc:
                        self.console.print(f"[red]{exc}[/]")
                return all(row.ok for row in self.holdings())
            failed = [
                n for n in CREDENTIALS if (st := self._state(n)) is not None and st.status is Status.ERROR
            ]
            if failed:
                self.console.print(f"[red]failed:[/] {', '.join(failed)} (see the messages above)")
                return False
            if time.monotonic() - start > self.timeout_s:
                self.console.print(f"[red]not done after {self.timeout_s:.0f}s[/]")
                return False
            stop.wait(0.2)
        return False  # stopped (Ctrl-C) before the end

    def _state(self, name: str) -> TlsCredentialState | None:
        assert self.hub is not None
        doc = self.hub.get_or_none(ids.credential_state_id(name))
        return TlsCredentialState.from_doc(doc) if doc is not None else None

    def _deployment(self, server: str, name: str) -> Deployment | None:
        assert self.hub is not None
        doc = self.hub.get_or_none(ids.deploy_id(server, name))
        return Deployment.from_doc(doc) if doc is not None else None

    def _progress_lines(self) -> dict[str, str]:
        lines = {}
        for name in CREDENTIALS:
            state = self._state(name)
            if state is not None:
                lines[name] = f"credential:{name}: {state.status.value} — {state.status_message or ''}"
                for server in SERVERS:
                    deployed = self._deployment(server, name)
                    if deployed is not None and deployed.serial:
                        lines[f"{server}/{name}"] = f"{server}: deployed {name} serial {deployed.serial}"
                    elif deployed is not None and deployed.error:
                        lines[f"{server}/{name}"] = f"{server}: {name}: {deployed.error}"
        return lines

    def _all_deployed(self) -> bool:
        for name in CREDENTIALS:
            state = self._state(name)
            if state is None or state.status is not Status.ISSUED:
                return False
            for server in SERVERS:
                deployed = self._deployment(server, name)
                if deployed is None or deployed.serial != state.serial:
                    return False
        return True

    def _all_live_checked(self) -> bool:
        return all(
            (deployed := self._deployment(server, name)) is not None and deployed.live_check is not None
            for server in SERVERS
            for name in CREDENTIALS
        )

    def holdings(self) -> list[Holding]:
        """Who holds what, from the hub's view (deploy documents replicated from every server)."""
        rows = []
        for server in SERVERS:
            for name in CREDENTIALS:
                state = self._state(name)
                deployed = self._deployment(server, name)
                serial = deployed.serial if deployed is not None and deployed.serial else "-"
                files = f"{server}/data/live/{name}/" if deployed is not None and deployed.serial else "-"
                live = "-"
                if deployed is not None and deployed.live_check is not None:
                    live = "ok" if deployed.live_check.ok else f"failed: {deployed.live_check.message}"
                ok = (
                    state is not None
                    and deployed is not None
                    and deployed.serial == state.serial
                    and (deployed.live_check is None or deployed.live_check.ok)
                )
                rows.append(Holding(server, name, serial, files, live, ok))
        return rows

    def _print_table(self) -> None:
        table = Table(
            "server",
            "credential",
            "serial",
            f"files (under {self.dir})",
            "live check",
            title="What each server holds",
        )
        for row in self.holdings():
            style = None if row.ok else "red"
            table.add_row(row.server, row.credential, row.serial, row.files, row.live_check, style=style)
        self.console.print(table)

    def _print_next_steps(self, hub_url: str, hub_admin_url: str) -> None:
        env = self.dir / "env"
        fd = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the admin password
        with os.fdopen(fd, "w") as out:
            out.write(f"export CERTSTORE_URL='{hub_admin_url}'\nexport CERTSTORE_DB='{DB}'\n")
        self.console.print(f"\nFauxton (the hub's admin UI): {hub_url}/_utils  (database: {DB})")
        self.console.print(f"Log in as admin with the password in {env}")
        self.console.print("Try next, in another terminal:")
        self.console.print(f"  . .venv/bin/activate && . {env}")
        self.console.print("  certstore status")
        self.console.print("  certstore credential add api --host api.example.com --server web2")
        self.console.print("  certstore credential show api")
        self.console.print("  certstore credential rekey site")
        self.console.print(f"  ls -l {self.dir / 'web1' / 'data' / 'live' / 'site'}/")


def run_demo(directory: Path, *, once: bool, console: Console, stop: threading.Event) -> bool:
    """Run the demo; True when every server ended up holding every certificate."""
    return Demo(directory, console).run(once=once, stop=stop)
