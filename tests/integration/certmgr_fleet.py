"""A small fleet for certmgr tests: a hub, replicas, enrolled servers, responders, a running certmgr."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.certmgr import Certmgr, CertmgrSettings
from agent.config import AgentConfig
from agent.hostagent import HostAgent
from agent.responder import ChallengeMap, Responder, challenge_follower
from agent.solver import SolverSettings
from store import ids, replication
from store.couch import CouchClient, Database
from store.documents import Server, TlsCredentialState
from store.enrollment import CERTMGR_ROLE, enroll
from store.follower import ChangesFollower, run_in_thread, wait_for
from store.hostkey import HostKey, load_host_key
from store.names import Status
from store.provision import init_database


class FakeClock:
    """A clock tests move forward by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance_to(self, when: datetime) -> None:
        self.now = when


@dataclass
class Host:
    """An enrolled server with its own replica, challenge map and HTTP-01 responder."""

    name: str
    state_dir: Path
    db: Database
    key: HostKey
    responder: Responder | None = None
    follower: ChangesFollower | None = None


@dataclass
class Fleet:
    """The hub database, the certmgr's identity and the hosts."""

    hub: Database
    certmgr_dir: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    stops: list[Callable[[], None]] = field(default_factory=list)

    def state(self, name: str) -> TlsCredentialState | None:
        doc = self.hub.get_or_none(ids.credential_state_id(name))
        return TlsCredentialState.from_doc(doc) if doc else None

    def wait_status(self, name: str, *statuses: Status, timeout: float = 60.0) -> TlsCredentialState:
        """Wait until the credential's state has one of ``statuses``; fail with its last message."""
        seen: list[TlsCredentialState | None] = [None]

        def reached() -> bool:
            seen[0] = self.state(name)
            return seen[0] is not None and seen[0].status in statuses

        if not wait_for(reached, timeout, interval=0.1):
            last = seen[0]
            detail = f"{last.status.value}: {last.status_message}" if last else "no state document"
            raise AssertionError(f"credential {name} never reached {[s.value for s in statuses]} ({detail})")
        assert seen[0] is not None
        return seen[0]

    def heartbeat(self, now: datetime, *, only: str | None = None) -> None:
        """What the agents' heartbeats publish (responder URL, time), written at ``now`` on each replica;
        returns once the hub has them."""
        for host in self.hosts.values():
            if host.responder is None or (only is not None and host.name != only):
                continue
            server = Server.from_doc(host.db.get(ids.server_id(host.name)))
            server.responder_url = host.responder.url
            server.heartbeat = now
            host.db.put(server.validated().to_doc())
            assert wait_for(lambda h=host: self._hub_heartbeat(h.name) == now, 20), (
                f"the heartbeat of {host.name} did not reach the hub"
            )

    def _hub_heartbeat(self, name: str) -> datetime | None:
        doc = self.hub.get_or_none(ids.server_id(name))
        return Server.from_doc(doc).heartbeat if doc is not None else None

    def single_host(self, replica_server: Any, replica_db: str, tmp_path: Path, port: int) -> Host:
        """web1 on its own replica, answering HTTP-01 on 127.0.0.1:``port``."""
        return add_host(
            self,
            "web1",
            replica_server,
            replica_db,
            tmp_path,
            responder_host="127.0.0.1",
            responder_port=port,
        )

    def close(self) -> None:
        for stop in reversed(self.stops):
            stop()


def make_fleet(hub_server: Any, db_name: str, tmp_path: Path) -> Fleet:
    """A hub database, initialised, and the certmgr host enrolled with the certmgr role."""
    client = CouchClient(hub_server.admin_url)
    init_database(client, hub_server.db_name(db_name))
    hub = client.db(hub_server.db_name(db_name))
    certmgr_dir = tmp_path / "certmgr"
    enroll(hub, "certmgr", certmgr_dir, roles=[CERTMGR_ROLE])
    return Fleet(hub=hub, certmgr_dir=certmgr_dir)


def add_host(
    fleet: Fleet,
    name: str,
    replica_server: Any,
    replica_db: str,
    tmp_path: Path,
    *,
    responder_host: str | None = None,
    responder_port: int | None = None,
) -> Host:
    """Enroll ``name`` through its own replica (replicating with the hub), optionally with a responder."""
    client = CouchClient(replica_server.admin_url)
    init_database(client, replica_db)
    db = client.db(replica_db)
    hub_server = fleet.hub.client.server
    replication.add(
        client,
        replication.Endpoint(hub_server.with_credentials(), fleet.hub.name),
        replication.Endpoint(replica_server.admin_url, replica_db),
        name=f"{name}-{replica_db}".replace("_", "-")[:60],
        server=name,
    )
    state_dir = tmp_path / name
    enroll(db, name, state_dir)
    host = Host(name=name, state_dir=state_dir, db=db, key=load_host_key(state_dir))
    if responder_host is not None and responder_port is not None:
        challenges = ChallengeMap()
        host.responder = Responder(challenges, responder_host, responder_port)
        host.responder.start()
        fleet.stops.append(host.responder.stop)
        host.follower = challenge_follower(db, challenges)
        run_in_thread(host.follower, f"challenges-{name}")
        fleet.stops.append(host.follower.stop)
    fleet.hosts[name] = host
    if host.responder is not None:
        fleet.heartbeat(datetime.now(UTC), only=name)
    assert wait_for(lambda: fleet.hub.get_or_none(ids.server_id(name)) is not None, 20), "no replication"
    return host


@contextmanager
def running_certmgr(
    fleet: Fleet, ca_file: str, *, clock: Callable[[], datetime] | None = None, **overrides: Any
) -> Iterator[Certmgr]:
    """A certmgr thread on the hub for the duration of the block (``clock`` injected if given)."""
    options: dict[str, Any] = {
        "name": "certmgr",
        "state_dir": fleet.certmgr_dir,
        "ca_bundle": ca_file,
        "solver": SolverSettings(serve_deadline_s=20.0, propagation_deadline_s=30.0),
        "lease_ttl": timedelta(seconds=5),
        "scan_interval_s": 3600.0,
        "order_deadline_s": 60.0,
    }
    options.update(overrides)
    certmgr = Certmgr(fleet.hub, CertmgrSettings(**options), **({"clock": clock} if clock else {}))
    stop = threading.Event()
    thread = threading.Thread(target=certmgr.run, args=(stop,), name="certmgr", daemon=True)
    thread.start()
    try:
        yield certmgr
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the certmgr did not stop"


# --- agents (issue 5): a HostAgent per host, in a thread, on the host's own replica ----------------


def agent_config(host: Host, tmp_path: Path, **overrides: Any) -> AgentConfig:
    """An agent config for ``host``: its replica, its state dir, a data dir of its own."""
    server = host.db.client.server
    options: dict[str, Any] = {
        "server": host.name,
        "url": server.url,
        "user": server.user,
        "password": server.password,
        "db": host.db.name,
        "state_dir": host.state_dir,
        "data_dir": tmp_path / f"{host.name}-data",
        "heartbeat_interval": 2.0,
    }
    options.update(overrides)
    return AgentConfig(**options)


@contextmanager
def running_agent(host: Host, config: AgentConfig, **kwargs: Any) -> Iterator[HostAgent]:
    """A :class:`HostAgent` thread for ``host`` for the duration of the block (waits until it follows)."""
    agent = HostAgent(config, host.db, **kwargs)
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(
        target=agent.run, args=(stop,), kwargs={"ready": ready.set}, name=f"agent-{host.name}", daemon=True
    )
    thread.start()
    try:
        assert ready.wait(30), f"agent {host.name} did not start"
        yield agent
    finally:
        stop.set()
        if agent.follower is not None:
            agent.follower.stop()
        thread.join(30)
        assert not thread.is_alive(), f"agent {host.name} did not stop"
