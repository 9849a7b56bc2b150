"""Benchmarks of the per-host agent on loopback pouchdb-server nodes; they print figures, assert nothing.

    .venv/bin/python bench/bench_agent.py propagation [--agents 10 50] [--rounds 15] [--nodes 5] [--threads]
    .venv/bin/python bench/bench_agent.py catchup [--credentials 10000] [--mine 1000]
    .venv/bin/python bench/bench_agent.py memory [--credentials 1000]

- propagation (P1): a new certificate state written on the hub until it is deployed by all N agents.
  Each agent follows its own replica database (continuous pull and push replication with the hub);
  the replicas are spread over ``--nodes`` pouchdb-server processes (a process per replica would not
  fit this machine at N = 50). Each agent is a process of its own, started as a host starts it
  (``certstore agent run --config FILE``, the replica node's admin login in a 0600 ``password_file``);
  "deployed" is ``live/<keyfile>/meta.json`` carrying the new fingerprint, seen through inotify on
  each agent's ``live/`` (from the second round; the warm-up round polls). Prints p50/p95 of the time
  until the last agent holds the new certificate, and of each agent's own time, and the agents' CPU
  seconds per round. ``--threads`` runs the agents as threads of this process instead (polled every
  2 ms), which adds the time until the change reaches each agent's feed — replication alone.
  On two cores the two modes give the same figures within the spread. It also prints the CPU per
  round of the agents, the hub and the replica nodes. Measured (agents as processes, quiet machine,
  2-4 runs each): N = 10, all agents p95 0.19-0.22 s (2 or 5 replica nodes); N = 50, 5 nodes, p50
  0.69-0.78 s, p95 0.83-0.93 s; N = 50, 2 nodes, p50 0.64-0.68 s, p95 0.78-0.84 s. A round at
  N = 50 costs about 1.25-1.45 CPU-seconds (hub 0.23, replica nodes 0.62-0.85, agents 0.4): the
  machine's two cores are the limit (docs/agent.md, "Benchmarks").
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
import os
import shutil
import signal
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
from agent.drift import Inotify
from agent.hostagent import HostAgent
from agent.keyring import read_meta
from agent.main import agent_run_command
from store import replication
from store.couch import CouchClient, Database
from store.enrollment import enroll
from store.files import libc
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


class ThreadAgents:
    """The agents as threads of this process; notes when the state change reaches each agent's feed."""

    def __init__(self) -> None:
        self.running: list[tuple[HostAgent, threading.Event, threading.Thread]] = []
        self.arrivals: dict[str, float] = {}

    def start(self, config: AgentConfig, db: Database) -> None:
        agent = HostAgent(config, db)
        agent.handle = _timed(agent.handle, self.arrivals, config.server)  # type: ignore[method-assign]
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        self.running.append((agent, stop, thread))

    def wait_caught_up(self, timeout: float) -> None:
        assert wait_for(
            lambda: all(
                a.follower is not None and a.follower.stats.caught_up.is_set() for a, _, _ in self.running
            ),
            timeout,
        ), "agents did not catch up"

    def deployed(self, fingerprint: str, start: float, deadline: float) -> dict[str, float]:
        """Seconds from ``start`` until each agent holds ``fingerprint`` (polled every 2 ms)."""
        seen: dict[str, float] = {}
        while len(seen) < len(self.running) and time.monotonic() < deadline:
            now = time.monotonic()
            for agent, _, _ in self.running:
                held = agent._held.get("bench")
                if agent.config.server not in seen and held and held.fingerprint == fingerprint:
                    seen[agent.config.server] = now - start
            time.sleep(0.002)
        return seen

    def cpu_seconds(self) -> float:
        """The agents' threads' CPU so far: this process's, less its main thread's (the polling, and
        issuing, sealing and writing each round's state). Call it from the main thread."""
        times = os.times()
        return times.user + times.system - time.thread_time()

    def stop(self) -> None:
        for agent, stop, _thread in self.running:
            stop.set()
            if agent.follower is not None:
                agent.follower.stop()
        for _, _, thread in self.running:
            thread.join(10)


class ProcessAgents:
    """The agents as ``certstore agent run --config FILE`` processes; deploys seen through inotify."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.data_dirs: dict[str, Path] = {}
        self.status_files: dict[str, Path] = {}
        self.logs: dict[str, Path] = {}
        self.inotify: Inotify | None = None
        self.live_links: dict[str, str] = {}  # <data_dir>/live/bench -> agent

    def start(self, config: AgentConfig, db: Database) -> None:
        name = config.server
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        password_file = home / "password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{config.password}\n")
        config_path = home / "agent.toml"
        write_agent_config(
            config_path,
            server=name,
            url=config.url,
            user=config.user,
            password_file=str(password_file),
            db=config.db,
            state_dir=str(config.state_dir),
            data_dir=str(config.data_dir),
        )
        self.logs[name] = home / "agent.log"
        self.data_dirs[name] = config.data_dir
        self.status_files[name] = config.state_dir / "agent-status.json"
        with self.logs[name].open("wb") as log:
            self.procs[name] = subprocess.Popen(
                agent_run_command(config_path),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Own session, as the nodes have: Ctrl-C reaches the bench, which stops them in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,  # this process starts them from one thread only
            )

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.logs[name].read_text(errors="replace")[-2000:]
                raise RuntimeError(f"agent {name} exited with status {proc.returncode}:\n{tail}")

    def wait_caught_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.procs)
        while pending and time.monotonic() < deadline:
            self._check_alive()
            pending = {name for name in pending if not status_caught_up(self.status_files[name])}
            time.sleep(0.2)
        assert not pending, f"agents not caught up after {timeout:g}s: {sorted(pending)}"

    def _holds(self, name: str, fingerprint: str) -> bool:
        meta = read_meta(self.data_dirs[name] / "live" / "bench")
        return meta is not None and meta.get("fingerprint_sha256") == fingerprint

    def deployed(self, fingerprint: str, start: float, deadline: float) -> dict[str, float]:
        """Seconds from ``start`` until each agent's ``live/bench`` holds ``fingerprint``.

        Until every agent has a ``live/`` (the warm-up round), polled every 20 ms; after that, woken
        by inotify on each ``live/`` directory, whose events queue from the moment the watch exists.
        """
        seen: dict[str, float] = {}
        names = list(self.procs)
        if self.inotify is None:
            while len(seen) < len(names) and time.monotonic() < deadline:
                now = time.monotonic()
                for name in names:
                    if name not in seen and self._holds(name, fingerprint):
                        seen[name] = now - start
                self._check_alive()
                time.sleep(0.02)
            if len(seen) == len(names):
                self._watch()
            return seen
        while len(seen) < len(names):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            changed, overflow = self.inotify.read(min(remaining, 1.0))
            now = time.monotonic()
            if not changed and not overflow:
                self._check_alive()
                continue
            touched = names if overflow else [self.live_links[p] for p in changed if p in self.live_links]
            for name in touched:
                if name not in seen and self._holds(name, fingerprint):
                    seen[name] = now - start
        return seen

    def _watch(self) -> None:
        lives = {name: self.data_dirs[name] / "live" for name in self.procs}
        inotify = Inotify(next(iter(lives.values())))
        for name, live in lives.items():
            inotify.add_tree(str(live))
            self.live_links[str(live / "bench")] = name
        self.inotify = inotify

    def drain(self) -> None:
        """Drop the events of the round before (the agents' pruning, stray switches)."""
        while self.inotify is not None and any(self.inotify.read(0)):
            pass

    def cpu_seconds(self) -> float:
        """The agent processes' CPU so far (user + system, all their threads)."""
        return sum(process_cpu_seconds(proc.pid) for proc in self.procs.values())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None


def write_agent_config(path: Path, **settings: str | None) -> None:
    """An ``agent.toml`` with these top-level settings, None ones left out (a JSON string is a valid
    TOML basic string)."""
    lines = (f"{key} = {json.dumps(value)}\n" for key, value in settings.items() if value is not None)
    path.write_text("".join(lines))


def process_cpu_seconds(pid: int) -> float:
    """A process's CPU so far (user + system, all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def nodes_cpu_seconds(nodes: list[CouchNode]) -> float:
    """The pouchdb-server processes' CPU so far."""
    return sum(process_cpu_seconds(node.process.pid) for node in nodes if node.process is not None)


def status_caught_up(status_file: Path) -> bool:
    """Whether an agent's ``agent-status.json`` says its follower has caught up."""
    try:
        return bool(json.loads(status_file.read_text())["follower"]["caught_up"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the bench dies, even by SIGKILL (Linux prctl)."""
    libc().prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def propagation(agents: int, rounds: int, node_count: int, root: Path, threads: bool) -> None:
    ca = TestCA()
    base = root / f"p1-{agents}-{'threads' if threads else 'procs'}"
    with couch_nodes(node_count + 1, base) as nodes:
        hub_node, replica_nodes = nodes[0], nodes[1:]
        hub_client = CouchClient(hub_node.admin_url)
        init_database(hub_client, DB)
        hub = hub_client.db(DB)
        names = [f"web{i}" for i in range(agents)]
        keys: dict[str, HostKey] = {}
        runner: ThreadAgents | ProcessAgents = ThreadAgents() if threads else ProcessAgents(base)
        try:
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
                enroll(hub, name, base / name / "state")
                keys[name] = load_host_key(base / name / "state")
                runner.start(agent_config(name, node, replica_db, base), client.db(replica_db))
            runner.wait_caught_up(120)
            hub.put(request_doc("bench", ["bench.example.com"], names))
            all_latencies: list[float] = []
            each_latencies: list[float] = []
            arrive_latencies: list[float] = []
            per_agent: dict[str, list[float]] = {n: [] for n in names}
            state_rev: str | None = None
            cpu_start = bench_cpu_start = hub_cpu_start = replicas_cpu_start = 0.0
            # Warm-up: the first certificate reaches everyone (replication and feeds are up).
            for round_no in range(rounds + 1):
                issued: Issued = ca.issue(["bench.example.com"])
                doc = state_doc("bench", issued, {n: keys[n].public_key for n in names})
                if state_rev:
                    doc["_rev"] = state_rev
                if isinstance(runner, ThreadAgents):
                    runner.arrivals.clear()
                else:
                    runner.drain()
                if round_no == 1:
                    cpu_start = runner.cpu_seconds()
                    bench_cpu_start = time.thread_time()
                    hub_cpu_start = nodes_cpu_seconds([hub_node])
                    replicas_cpu_start = nodes_cpu_seconds(replica_nodes)
                start = time.monotonic()
                state_rev = hub.put(doc)
                deadline = start + (120 if round_no == 0 else 20)
                seen = runner.deployed(issued.fingerprint, start, deadline)
                if round_no == 0:
                    print(f"  warm-up: {len(seen)}/{agents} agents in {time.monotonic() - start:.1f}s")
                    continue
                if len(seen) < agents:
                    print(f"  round {round_no}: only {len(seen)}/{agents} agents within 20 s")
                    continue
                all_latencies.append(max(seen.values()))
                each_latencies.extend(seen.values())
                for name, latency in seen.items():
                    per_agent[name].append(latency)
                if isinstance(runner, ThreadAgents):
                    arrive_latencies.extend(t - start for t in runner.arrivals.values())
            cpu_per_round = (runner.cpu_seconds() - cpu_start) / rounds
            bench_cpu_per_round = (time.thread_time() - bench_cpu_start) / rounds
            hub_cpu_per_round = (nodes_cpu_seconds([hub_node]) - hub_cpu_start) / rounds
            replicas_cpu_per_round = (nodes_cpu_seconds(replica_nodes) - replicas_cpu_start) / rounds
        finally:
            runner.stop()
        if not all_latencies:
            return
        mode = "agents as threads of the bench" if threads else "agents as processes"
        print(
            f"P1 propagation N={agents} ({len(replica_nodes)} replica nodes, {mode}, "
            f"{len(all_latencies)} rounds): "
            f"all agents p50 {statistics.median(all_latencies) * 1000:.0f} ms, "
            f"p95 {percentile(all_latencies, 95) * 1000:.0f} ms; "
            f"per agent p50 {statistics.median(each_latencies) * 1000:.0f} ms, "
            f"p95 {percentile(each_latencies, 95) * 1000:.0f} ms (target: all agents p95 <= 1000 ms)"
        )
        if arrive_latencies:
            print(
                f"  of which replication until the change reaches an agent's feed: p50 "
                f"{statistics.median(arrive_latencies) * 1000:.0f} ms, "
                f"p95 {percentile(arrive_latencies, 95) * 1000:.0f} ms"
            )
        medians = sorted(statistics.median(v) for v in per_agent.values() if v)
        worst = max(percentile(v, 95) for v in per_agent.values() if v)
        print(
            f"  each agent's own p50 from {medians[0] * 1000:.0f} ms to {medians[-1] * 1000:.0f} ms, "
            f"its p95 at most {worst * 1000:.0f} ms"
        )
        what = "the agents' threads" if threads else "the agent processes"
        watching = "polling every 2 ms" if threads else "inotify"
        print(
            f"  CPU per round: {what} {cpu_per_round:.2f} s; the bench's main thread (issuing, sealing, "
            f"writing the state, {watching}) {bench_cpu_per_round:.2f} s; pouchdb-server: the hub "
            f"{hub_cpu_per_round:.2f} s, the replica nodes {replicas_cpu_per_round:.2f} s"
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
        agent = HostAgent(config, db, checkpoint_s=checkpoint_s)
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
        write_agent_config(
            config_path,
            server="web1",
            url=node.admin_url,
            db=DB,
            state_dir=str(state_dir),
            data_dir=str(data_dir),
        )
        proc = subprocess.Popen(agent_run_command(config_path))
        try:
            status = state_dir / "agent-status.json"
            assert wait_for(lambda: status_caught_up(status), 60)
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
    p1.add_argument(
        "--threads",
        action="store_true",
        help="run the agents as threads of this process (adds the time until the change reaches a feed)",
    )
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
    # A plain `kill` ends the bench through its `finally` blocks too: agents and nodes are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    root = Path(tempfile.mkdtemp(prefix="certstore-bench-"))
    try:
        if args.command == "propagation":
            for n in args.agents:
                propagation(n, args.rounds, min(args.nodes, n), root, args.threads)
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
