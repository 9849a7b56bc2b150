"""Shared fixtures: real local services (pouchdb-server or an external CouchDB, pebble, DNS) on free ports.

Everything comes from ``store.localservices``, the same code ``certstore dev`` runs.

- ``couch_server``: a CouchDB to test against (:class:`CouchServer`). With ``CERTSTORE_TEST_COUCHDB_URL``
  (an admin URL) that server is used and nothing is started; otherwise a pouchdb-server per session.
- ``couch_servers(n)``: ``n`` servers, the first being ``couch_server``; ``second_couch_server`` is the
  second. Against an external CouchDB they are all that one server with different database prefixes,
  so always build database names with ``server.db_name(name)`` / ``server.db_url(name)``.
- ``db_name``: a fresh database name per test (the database is not created).
- ``challtestsrv``: DNS resolving every name to 127.0.0.1 (pebble's resolver), TXT records by API.
- ``pebble``: a session pebble resolving through ``challtestsrv``; ``pebble_factory(**PebbleOptions)``
  starts another one for one test (EAB, a given ``http_port``, chaos settings, another DNS server).
- ``bind_server(zones, ...)``: a BIND9 authoritative for fresh zones, accepting TSIG updates.

Each process is stopped when its fixture ends; a session hook stops anything left over.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from store import localservices
from store.localservices import BindServer, ChallTestSrv, CouchNode, Pebble, PebbleOptions


class CouchServer:
    """A CouchDB server for a test: a pouchdb-server we run (restartable) or an external CouchDB."""

    def __init__(self, node: CouchNode) -> None:
        self.node = node

    @property
    def url(self) -> str:
        """Base URL without credentials, no trailing slash."""
        return self.node.url

    @property
    def admin_user(self) -> str:
        return self.node.admin_user

    @property
    def admin_password(self) -> str:
        return self.node.admin_password

    @property
    def admin_url(self) -> str:
        """Base URL with the admin credentials embedded."""
        return self.node.admin_url

    @property
    def auth(self) -> tuple[str, str]:
        """``(admin_user, admin_password)`` for httpx's ``auth=``."""
        return (self.node.admin_user, self.node.admin_password)

    @property
    def restartable(self) -> bool:
        """True for a pouchdb-server we run; stop/start/restart skip the test otherwise."""
        return not self.node.external

    def db_name(self, name: str) -> str:
        """The database holding this server's replica of ``name`` (prefixed when servers are shared)."""
        return self.node.db_name(name)

    def db_url(self, name: str, *, admin: bool = False) -> str:
        """URL of this server's replica of database ``name``."""
        return self.node.db_url(name, admin=admin)

    def alive(self) -> bool:
        return self.node.alive()

    def stop(self) -> None:
        """Kill the server (SIGTERM to its process group); its port and data stay reserved for start()."""
        self._require_restartable()
        localservices.stop_service(self.node)

    def start(self) -> None:
        """Start the server again on the same port and data dir; returns once it answers."""
        self._require_restartable()
        self.node = localservices.restart_couch_node(self.node)

    def restart(self) -> None:
        """stop() then start()."""
        self.start()  # restart_couch_node stops it first

    def _require_restartable(self) -> None:
        if not self.restartable:
            pytest.skip("needs a pouchdb-server started by the tests (an external CouchDB is in use)")

    def __repr__(self) -> str:
        return f"CouchServer({self.node.name}, {self.url})"


def _external_couchdb_url() -> str | None:
    return os.environ.get(localservices.TEST_COUCHDB_URL_ENV) or None


@pytest.fixture(scope="session")
def services_installed() -> None:
    """Install the local services once per session (fast when they are already installed)."""
    localservices.ensure_installed(npm=_external_couchdb_url() is None, for_tests=True)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parent directory for every service's data in this session."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def _couch_pool(services_installed: None, services_dir: Path) -> Iterator[list[CouchServer]]:
    """The session's CouchDB servers, created on demand by ``couch_servers``."""
    pool: list[CouchServer] = []
    yield pool
    for server in pool:
        localservices.stop_service(server.node)


@pytest.fixture
def couch_servers(_couch_pool: list[CouchServer], services_dir: Path) -> Callable[[int], list[CouchServer]]:
    """``couch_servers(n)`` → ``n`` running servers (shared by the session; a dead one is restarted)."""

    def get(count: int) -> list[CouchServer]:
        external = _external_couchdb_url()
        if external is not None:
            while len(_couch_pool) < count:
                index = len(_couch_pool)
                (node,) = localservices.external_couch_nodes(external, 1)
                node = replace(node, name=f"couch{index + 1}", db_prefix=f"s{index + 1}-" if index else "")
                _couch_pool.append(CouchServer(node))
        while len(_couch_pool) < count:
            name = f"couch{len(_couch_pool) + 1}"
            _couch_pool.append(CouchServer(localservices.start_couch_node(services_dir / name, name=name)))
        servers = _couch_pool[:count]
        for server in servers:
            if server.restartable and not server.alive():
                server.start()  # an earlier test stopped it and failed before starting it again
        return servers

    return get


@pytest.fixture
def couch_server(couch_servers: Callable[[int], list[CouchServer]]) -> CouchServer:
    """The session's CouchDB server (running when the test starts)."""
    return couch_servers(1)[0]


@pytest.fixture
def second_couch_server(couch_servers: Callable[[int], list[CouchServer]]) -> CouchServer:
    """A second server, for replication between servers (the same external server, other db prefix)."""
    return couch_servers(2)[1]


@pytest.fixture
def db_name() -> str:
    """A fresh, valid CouchDB database name for this test (not created)."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def challtestsrv(services_installed: None, services_dir: Path) -> Iterator[ChallTestSrv]:
    """pebble-challtestsrv as DNS: every A query answers 127.0.0.1; TXT records through its API."""
    server = localservices.start_challtestsrv(services_dir / "challtestsrv")
    yield server
    localservices.stop_service(server)


@pytest.fixture(scope="session")
def pebble(challtestsrv: ChallTestSrv, services_dir: Path) -> Iterator[Pebble]:
    """A session pebble (pebble's default chaos on) that resolves every name to 127.0.0.1."""
    server = localservices.start_pebble(
        services_dir / "pebble", PebbleOptions(dns_server=challtestsrv.dns_address)
    )
    yield server
    localservices.stop_service(server)


@pytest.fixture
def a_records(challtestsrv: ChallTestSrv) -> Iterator[Callable[[str, Sequence[str]], None]]:
    """``a_records(name, addresses)``: challtestsrv answers ``name`` with ``addresses`` in this test."""
    names: list[str] = []

    def set_a(name: str, addresses: Sequence[str]) -> None:
        challtestsrv.set_a(name, addresses)
        names.append(name)

    yield set_a
    for name in names:
        challtestsrv.clear_a(name)


@pytest.fixture
def pebble_factory(challtestsrv: ChallTestSrv, tmp_path: Path) -> Iterator[Callable[..., Pebble]]:
    """``pebble_factory(**PebbleOptions fields)`` → a pebble of this test's own (stopped after it).

    ``dns_server`` defaults to ``challtestsrv``; pass e.g. ``bind.address`` for DNS-01 against BIND.
    """
    started: list[Pebble] = []

    def start(**options: Any) -> Pebble:
        options.setdefault("dns_server", challtestsrv.dns_address)
        server = localservices.start_pebble(tmp_path / f"pebble{len(started) + 1}", PebbleOptions(**options))
        started.append(server)
        return server

    yield start
    for server in started:
        localservices.stop_service(server)


@pytest.fixture
def bind_server(services_installed: None, tmp_path: Path) -> Iterator[Callable[..., BindServer]]:
    """``bind_server(zones, tsig_key_name=..., tsig_secret=None)`` → a BIND9 for this test (stopped after)."""
    started: list[BindServer] = []

    def start(zones: Sequence[str], **kwargs: Any) -> BindServer:
        server = localservices.start_bind(tmp_path / f"bind{len(started) + 1}", zones, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        localservices.stop_service(server)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is marked ``integration`` (so ``-m "not integration"`` works)."""
    integration_dir = Path(__file__).parent / "integration"
    for item in items:
        if integration_dir in item.path.parents:
            item.add_marker(pytest.mark.integration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: stop any process the fixtures started and did not stop."""
    localservices.stop_started_processes()
