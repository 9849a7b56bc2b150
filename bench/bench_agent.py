"""Benchmarks of the per-host agent on loopback pouchdb-server nodes; they print figures, assert nothing.

    .venv/bin/python bench/bench_agent.py propagation [--agents 10 50] [--rounds 15] [--nodes 5]
    .venv/bin/python bench/bench_agent.py catchup [--credentials 10000] [--mine 1000]
    .venv/bin/python bench/bench_agent.py memory [--credentials 1000]

- propagation (P1): a new certificate state written on the hub until it is deployed by all N agents.
  Each agent follows its own replica database (continuous pull and push replication with the hub);
  the replicas are spread over ``--nodes`` pouchdb-server processes (a process per replica would not
  fit this machine at N = 50). Agents run as threads of this process. Prints p50/p95 of the time until
  the last agent holds the new certificate, and of each agent's own time.
- catchup (P2): a fresh agent over ``--credentials`` requests and their states (``--mine`` of them for
  this agent), against a raw ``_changes?include_docs=true`` read of the same feed, same run.
- memory: the resident set of a ``certstore agent run`` process, idle and with ``--credentials``
  deployed.

Certificates come from a test CA made with ``cryptography`` (tests/agent_ca.py), no ACME CA needed.
Each sub-command stays under about three minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from agent_ca import Issued, TestCA, request_doc, state_doc

from agent.config import AgentConfig
from agent.hostagent import HostAgent
from store import replication
from store.couch import CouchClient, Database
from store.enrollment import enroll
from store.follower import wait_for
from store.hostkey import HostKey, generate_host_key, load_host_key
from store.localservices import CouchNode, start_couch_node, stop_service
from store.provision import init_database

DB = "certstore"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def couch_nodes(count: int, root: Path) -> Iterator[list[CouchNode]]:
    nodes: list[CouchNode] = []
    try:
        for i in range(count):
            nodes.append(start_couch_node(root / f"node{i}", name=f"bench{i}"))
        yield nodes
    finally:
        for node in nodes:
            stop_service(node)


def agent_config(name: str, node: CouchNode, db: str, root: Path, **extra: Any) -> AgentConfig:
    return AgentConfig(
        server=name,
        url=node.url,
        user=node.admin_user,
        password=node.admin_password,
        db=db,
        state_dir=root / name / "state",
        data_dir=root / name / "data",
        **extra,
    )


# --- P1 -------------------------------------------------------------------------------------------


def propagation(agents: int, rounds: int, node_count: int, root: Path) -> None:
    ca = TestCA()
    with couch_nodes(node_count + 1, root / f"p1-{agents}") as nodes:
        hub_node, replica_nodes = nodes[0], nodes[1:]
        hub_client = CouchClient(hub_node.admin_url)
        init_database(hub_client, DB)
        hub = hub_client.db(DB)
        names = [f"web{i}" for i in range(agents)]
        keys: dict[str, HostKey] = {}
        arrivals: dict[str, float] = {}
        running: list[tuple[HostAgent, threading.Event, threading.Thread]] = []
        for i, name in enumerate(names):
            node = replica_nodes[i % len(replica_nodes)]
            client = CouchClient(node.admin_url)
            replica_db = f"replica-{name}"
            init_database(client, replica_db)
            replication.add(
                client,
                replication.Endpoint(hub_node.admin_url, DB),
                replication.Endpoint(node.admin_url, replica_db),
                name=f"{name}-bench",
                server=name,
            )
            enroll(hub, name, root / f"p1-{agents}" / name / "state")
            keys[name] = load_host_key(root / f"p1-{agents}" / name / "state")
            config = agent_config(name, node, replica_db, root / f"p1-{agents}")
            agent = HostAgent(config, client.db(replica_db))
            agent.handle = _timed(agent.handle, arrivals, name)  # type: ignore[method-assign]
            stop = threading.Event()
            thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
            thread.start()
            running.append((agent, stop, thread))
        hub.put(request_doc("bench", ["bench.example.com"], names))
        all_latencies: list[float] = []
        each_latencies: list[float] = []
        arrive_latencies: list[float] = []
        state_rev: str | None = None
        try:
            # Warm-up: the first certificate reaches everyone (replication and feeds are up).
            for round_no in range(rounds + 1):
                issued: Issued = ca.issue(["bench.example.com"])
                doc = state_doc("bench", issued, {n: keys[n].public_key for n in names})
                if state_rev:
                    doc["_rev"] = state_rev
                arrivals.clear()
                start = time.monotonic()
                state_rev = hub.put(doc)
                seen: dict[str, float] = {}
                deadline = start + (120 if round_no == 0 else 20)
                while len(seen) < agents and time.monotonic() < deadline:
                    now = time.monotonic()
                    for agent, _, _ in running:
                        held = agent._held.get("bench")
                        if (
                            agent.config.server not in seen
                            and held
                            and held.fingerprint == issued.fingerprint
                        ):
                            seen[agent.config.server] = now - start
                    time.sleep(0.002)
                if round_no == 0:
                    print(f"  warm-up: {len(seen)}/{agents} agents in {time.monotonic() - start:.1f}s")
                    continue
                if len(seen) < agents:
                    print(f"  round {round_no}: only {len(seen)}/{agents} agents within 20 s")
                    continue
                all_latencies.append(max(seen.values()))
                each_latencies.extend(seen.values())
                arrive_latencies.extend(t - start for t in arrivals.values())
        finally:
            for _agent, stop, _thread in running:
                stop.set()
                if _agent.follower is not None:
                    _agent.follower.stop()
            for _, _, thread in running:
                thread.join(10)
        if all_latencies:
            print(
                f"P1 propagation N={agents} ({len(replica_nodes)} replica nodes, "
                f"{len(all_latencies)} rounds): "
                f"all agents p50 {statistics.median(all_latencies) * 1000:.0f} ms, "
                f"p95 {percentile(all_latencies, 95) * 1000:.0f} ms; "
                f"per agent p50 {statistics.median(each_latencies) * 1000:.0f} ms, "
                f"p95 {percentile(each_latencies, 95) * 1000:.0f} ms (target: all agents p95 <= 1000 ms); "
                f"of which replication until the change reaches an agent's feed: p50 "
                f"{statistics.median(arrive_latencies) * 1000:.0f} ms, "
                f"p95 {percentile(arrive_latencies, 95) * 1000:.0f} ms"
            )


def _timed(handle: Any, arrivals: dict[str, float], name: str) -> Any:
    """Wrap an agent's handler to note when the state change reaches it through its replica."""

    def timed(change: Any) -> None:
        if change.id == "credential:bench:state":
            arrivals.setdefault(name, time.monotonic())
        handle(change)

    return timed


# --- P2 and memory: one database with many credentials ---------------------------------------------


def fill(db: Database, ca: TestCA, me: str, key: HostKey, total: int, mine: int) -> int:
    """``total`` requests and states, ``mine`` of them for ``me``; returns the number of feed rows."""
    others_key = generate_host_key(Path(tempfile.mkdtemp()) / "other")
    shared = ca.issue(["other.example.com"])
    shared_state = state_doc("x", shared, {"other": others_key.public_key})
    batch: list[dict[str, Any]] = []
    rows = 0
    step = max(1, total // mine) if mine else total + 1  # every step-th credential is for `me`
    for i in range(total):
        name = f"cred{i:05d}"
        host = f"{name}.example.com"
        if i % step == 0 and i // step < mine:
            issued = ca.issue([host])
            batch.append(request_doc(name, [host], [me]))
            batch.append(state_doc(name, issued, {me: key.public_key}))
        else:
            batch.append(request_doc(name, ["other.example.com"], ["other"]))
            batch.append({**shared_state, "_id": f"credential:{name}:state"})
        if len(batch) >= 1000:
            db.bulk_docs(batch)
            rows += len(batch)
            batch = []
    if batch:
        db.bulk_docs(batch)
        rows += len(batch)
    return rows


def raw_read(node: CouchNode, db: str) -> tuple[int, float]:
    start = time.monotonic()
    with httpx.Client(auth=(node.admin_user, node.admin_password), timeout=300) as client:
        resp = client.get(
            f"{node.url}/{db}/_changes",
            params={"include_docs": "true"},
            headers={"Accept": "application/json"},
        )
        count = len(resp.json()["results"])
    return count, time.monotonic() - start


def catchup(total: int, mine: int, root: Path, checkpoint_s: float) -> None:
    ca = TestCA()
    with couch_nodes(1, root / "p2") as (node,):
        client = CouchClient(node.admin_url)
        init_database(client, DB)
        db = client.db(DB)
        key = generate_host_key(root / "p2" / "web1" / "state")
        started = time.monotonic()
        rows = fill(db, ca, "web1", key, total, mine)
        print(f"  wrote {rows} documents in {time.monotonic() - started:.1f}s")
        count, raw_s = raw_read(node, DB)
        config = agent_config("web1", node, DB, root / "p2")
        agent = HostAgent(config, db, catch_up_checkpoint_s=checkpoint_s)
        stop = threading.Event()
        started = time.monotonic()
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        # Done when the feed is read to its end and every credential of this agent is deployed.
        assert wait_for(
            lambda: (
                agent.follower is not None
                and agent.follower.stats.caught_up.is_set()
                and len(agent._held) >= mine
            ),
            170,
        )
        agent_s = time.monotonic() - started
        held = len(agent._held)
        stop.set()
        if agent.follower is not None:
            agent.follower.stop()
        thread.join(30)
        _, raw2_s = raw_read(node, DB)
        raw_rate = count / raw_s
        agent_rate = count / agent_s
        print(
            f"P2 catch-up over {count} feed rows ({total} credentials, {held} deployed for this agent): "
            f"raw _changes read {raw_s:.2f}s ({raw_rate:.0f} rows/s; again after: {raw2_s:.2f}s), "
            f"agent {agent_s:.2f}s ({agent_rate:.0f} rows/s) = {agent_rate / raw_rate:.2f} of the raw rate "
            f"(target >= 0.5)"
        )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(total: int, root: Path) -> None:
    ca = TestCA()
    with couch_nodes(1, root / "mem") as (node,):
        client = CouchClient(node.admin_url)
        init_database(client, DB)
        db = client.db(DB)
        state_dir = root / "mem" / "web1" / "state"
        enroll(db, "web1", state_dir)
        config_path = root / "mem" / "agent.toml"
        data_dir = root / "mem" / "web1" / "data"
        config_path.write_text(
            f'server = "web1"\nurl = "{node.admin_url}"\ndb = "{DB}"\nstate_dir = "{state_dir}"\n'
            f'data_dir = "{data_dir}"\n'
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from agent.main import main; main()",
                "agent",
                "run",
                "--config",
                str(config_path),
            ]
        )
        try:
            status = state_dir / "agent-status.json"

            def caught_up() -> bool:
                try:
                    return bool(json.loads(status.read_text())["follower"]["caught_up"])
                except (OSError, ValueError, KeyError, TypeError):
                    return False

            assert wait_for(caught_up, 60)
            time.sleep(2)  # let start-up garbage settle before reading the idle figure
            idle = rss_mb(proc.pid)
            key = load_host_key(state_dir)
            fill(db, ca, "web1", key, total, total)
            live = data_dir / "live"
            assert wait_for(lambda: live.is_dir() and len(list(live.iterdir())) >= total, 170)
            time.sleep(2)
            loaded = rss_mb(proc.pid)
            print(
                f"memory: agent RSS idle {idle:.1f} MB (target <= 40), with {total} credentials deployed "
                f"{loaded:.1f} MB (target <= 80)"
            )
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p1 = sub.add_parser("propagation")
    p1.add_argument("--agents", type=int, nargs="+", default=[10, 50])
    p1.add_argument("--rounds", type=int, default=15)
    p1.add_argument("--nodes", type=int, default=5, help="pouchdb-server processes holding the replicas")
    p2 = sub.add_parser("catchup")
    p2.add_argument("--credentials", type=int, default=10000)
    p2.add_argument("--mine", type=int, default=1000)
    p2.add_argument(
        "--checkpoint-interval",
        type=float,
        nargs="+",
        default=[1.0],
        help="seconds between checkpoint writes while catching up (0: after every change)",
    )
    mem = sub.add_parser("memory")
    mem.add_argument("--credentials", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="certstore-bench-"))
    try:
        if args.command == "propagation":
            for n in args.agents:
                propagation(n, args.rounds, min(args.nodes, n), root)
        elif args.command == "catchup":
            for checkpoint_s in args.checkpoint_interval:
                print(f"checkpoint written at most every {checkpoint_s:g}s while catching up:")
                catchup(args.credentials, args.mine, root / f"ckpt{checkpoint_s:g}", checkpoint_s)
        else:
            memory(args.credentials, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
