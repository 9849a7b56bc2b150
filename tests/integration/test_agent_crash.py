"""SIGKILL a real ``certstore agent run`` process at random points during deploys: never a torn set."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from agent_ca import TestCA, request_doc, state_doc
from test_agent import assert_complete, direct_host, live_fingerprint

from agent.config import load_config
from agent.main import agent_run_command
from store import ids
from store.couch import Database
from store.follower import wait_for

pytestmark = pytest.mark.integration

CREDENTIALS = [f"c{i}" for i in range(5)]
KILLS = 15


def start_agent(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            agent_run_command(config_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def start_running(config_path: Path, log: Path, db: Database) -> subprocess.Popen[bytes]:
    """Start the agent and wait until it has written a heartbeat (it is then running, signals handled)."""
    before = (db.get_or_none(ids.server_id("web1")) or {}).get("heartbeat")
    proc = start_agent(config_path, log)
    moved = wait_for(lambda: (db.get_or_none(ids.server_id("web1")) or {}).get("heartbeat") != before, 20)
    if not moved:
        proc.kill()
        proc.wait()
        raise AssertionError("the agent did not start:\n" + log.read_text()[-2000:])
    return proc


def test_sigkill_during_deploys_never_leaves_a_torn_set(
    couch_server: Any, db_name: str, tmp_path: Path
) -> None:
    ca = TestCA()
    host = direct_host(couch_server, db_name, tmp_path)
    server = host.db.client.server
    config_path = tmp_path / "agent.toml"
    config_path.write_text(
        f'server = "web1"\nurl = "{server.with_credentials()}"\ndb = "{host.db.name}"\n'
        f'state_dir = "{host.state_dir}"\ndata_dir = "{tmp_path / "data"}"\nheartbeat_interval = 1\n'
    )
    config = load_config(config_path, env={})
    recipients = {"web1": host.key.public_key}
    revs: dict[str, str] = {}

    def write_states() -> dict[str, str]:
        docs, fingerprints = [], {}
        for name in CREDENTIALS:
            issued = ca.issue([f"{name}.example.com"])
            doc = state_doc(name, issued, recipients)
            if doc["_id"] in revs:
                doc["_rev"] = revs[doc["_id"]]
            docs.append(doc)
            fingerprints[name] = issued.fingerprint
        for row in host.db.bulk_docs(docs):
            revs[row["id"]] = row["rev"]
        return fingerprints

    host.db.bulk_docs([request_doc(name, [f"{name}.example.com"], ["web1"]) for name in CREDENTIALS])
    latest = write_states()
    rng = random.Random(5)
    log = tmp_path / "agent.log"
    torn_rounds = 0
    for _ in range(KILLS):
        proc = start_running(config_path, log, host.db)
        try:
            latest = write_states()
            # The kill instant is random on purpose: there is no condition to wait for.
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        seen = set()
        for keyfile in os.listdir(config.data_dir / "live"):
            if keyfile.startswith("."):
                continue  # a temp link the next start cleans up: never what a service reads
            assert_complete(config, keyfile)
            seen.add(live_fingerprint(config, keyfile) == latest[keyfile])
        torn_rounds += len(seen) > 1  # some credentials renewed, some not: the kill fell mid-batch
    print(f"{KILLS} kills, {torn_rounds} of them in the middle of a batch of deploys")
    proc = start_running(config_path, log, host.db)
    try:
        assert wait_for(lambda: all(live_fingerprint(config, n) == latest[n] for n in CREDENTIALS), 30), (
            log.read_text()[-2000:]
        )
        for name in CREDENTIALS:
            assert_complete(config, name)
            versions = os.listdir(config.data_dir / "versions" / name)
            assert not [v for v in versions if v.startswith(".")]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
