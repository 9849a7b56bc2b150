"""Two `certstore certmgr run` processes: one acts, the other takes over when the first is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from certmgr_fleet import Fleet, make_fleet

from agent.admin import add_account, add_credential
from store import ids
from store.documents import Lease, Server
from store.follower import wait_for
from store.names import Status

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(couch_servers: Any, db_name: str, tmp_path: Path, pebble: Any) -> Iterator[Fleet]:
    hub_server, replica_server = couch_servers(2)
    made = make_fleet(hub_server, db_name, tmp_path)
    made.single_host(replica_server, replica_server.db_name(db_name + "-web1"), tmp_path, pebble.http_port)
    yield made
    made.close()


def start_certmgr(fleet: Fleet, pebble: Any, log: Path) -> subprocess.Popen[bytes]:
    client = fleet.hub.client
    argv = [
        sys.executable,
        "-m",
        "agent.cli",
        "certmgr",
        "run",
        "certmgr",
        "--url",
        client.server.with_credentials(),
        "--db",
        fleet.hub.name,
        "--state-dir",
        str(fleet.certmgr_dir),
        "--ca-file",
        str(pebble.ca_file),
        "--lease-ttl",
        "2",
        "--serve-deadline",
        "20",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def lease_holder_instance(fleet: Fleet) -> str | None:
    """The process instance named on the lease document (None before anyone took it)."""
    doc = fleet.hub.get_or_none(ids.LEASE_CERTMGR)
    return None if doc is None else str(Lease.from_doc(doc).extra.get("instance"))


def test_second_certmgr_takes_over_without_duplicate_orders(
    fleet: Fleet, pebble: Any, tmp_path: Path
) -> None:
    add_account(fleet.hub, "pebble", pebble.directory_url, agree_tos=True)
    first = start_certmgr(fleet, pebble, tmp_path / "first.log")
    procs = [first]
    try:
        assert wait_for(lambda: lease_holder_instance(fleet) is not None, 20), "nobody took the lease"
        first_instance = lease_holder_instance(fleet)
        second = start_certmgr(fleet, pebble, tmp_path / "second.log")
        procs.append(second)

        add_credential(fleet.hub, "one", ["one.example.com"], servers=["web1"], account="pebble")
        one = fleet.wait_status("one", Status.ISSUED, Status.ERROR)
        assert one.status is Status.ISSUED, one.status_message
        assert lease_holder_instance(fleet) == first_instance, "the standby acted while the first was alive"
        # The acting certmgr says it is alive on its own server document (what `certstore status` shows).
        assert Server.from_doc(fleet.hub.get(ids.server_id("certmgr"))).heartbeat is not None

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        assert wait_for(lambda: lease_holder_instance(fleet) not in (None, first_instance), 20), (
            "the standby never took over"
        )
        add_credential(fleet.hub, "two", ["two.example.com"], servers=["web1"], account="pebble")
        two = fleet.wait_status("two", Status.ISSUED, Status.ERROR)
        assert two.status is Status.ISSUED, two.status_message
        # The credential issued before the takeover was not ordered again.
        again = fleet.state("one")
        assert again is not None and again.serial == one.serial
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
    logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert "Traceback" not in logs, logs
    assert logs.count("issue (first issuance)") == 2, logs
