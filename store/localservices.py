"""The local services certstore runs for real: pouchdb-server nodes, pebble, DNS (used by dev, tests, CI).

One piece of code serves ``certstore dev``, the pytest fixtures and CI:

- :func:`ensure_installed` installs what is missing (npm packages with the pouchdb-validation patch,
  and the Debian packages ``pebble`` and ``bind9``) and is fast when everything is already there.
- ``start_*`` functions start one service on free loopback ports and wait, with a deadline, until it
  answers; each returns a frozen dataclass that says how to reach it and which process it is.
- :func:`stop_service` kills only a process we started: the pid's command line must still be the one we
  launched, and we kill the process group we created for it.
- :func:`dev_up`, :func:`dev_status` and :func:`dev_down` keep one state file per directory.

An external CouchDB (``CERTSTORE_TEST_COUCHDB_URL`` for tests, ``CERTSTORE_COUCHDB_URL`` for dev) replaces
the pouchdb-server nodes: every node is then that one server, and a node's replica is a database whose
name carries the node's :attr:`CouchNode.db_prefix`, so callers never need to know which mode they are in.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.update
import httpx

from store.errors import InstallError, ServiceError, ServiceStartError
from store.follower import wait_for

LOOPBACK = "127.0.0.1"
STATE_FILE_NAME = "state.json"
STATE_VERSION = 1
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

COUCHDB_URL_ENV = "CERTSTORE_COUCHDB_URL"
TEST_COUCHDB_URL_ENV = "CERTSTORE_TEST_COUCHDB_URL"
NODE_DIR_ENV = "CERTSTORE_NODE_DIR"

#: binary -> the Debian package(s) that provide it (space-separated).
APT_PACKAGES: Mapping[str, str] = {
    "pebble": "pebble",
    "pebble-challtestsrv": "pebble",
    "named": "bind9",
    "named-checkconf": "bind9-utils",
    "node": "nodejs",
    "npm": "npm",
}
#: What only the test suite needs: PowerDNS with an API, for the dns-lexicon provider's tests.
TEST_APT_PACKAGES: Mapping[str, str] = {"pdns_server": "pdns-server pdns-backend-sqlite3"}
# Debian keeps named in /usr/sbin, which is not on an ordinary user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
_NODE_BINARIES = frozenset({"node", "npm"})
_PATCH_MARKER = "certstore patch"
#: package -> the files our patch in node/patches/ changes (each hunk is marked "certstore patch").
#: Correctness: pouchdb-validation keeps replicated revisions into a validated database (DESIGN.md);
#: node-fetch (pouchdb's HTTP client) fails a body cut off by a closed connection instead of hanging,
#: so continuous replications retry when the other server restarts (README.md).
#: Speed (docs/agent.md, P1): pouchdb-utils (feeds waiting at one seq share a read of the new rows and
#: move past what they read), pouchdb-changes-filter (filters compiled once), pouchdb-auth (no disk
#: size per request, PBKDF2 results kept), pouchdb-server (--no-stdout-logs honoured),
#: pouchdb-replication (CouchDB's checkpoint_interval honoured), pouchdb-adapter-http (a live feed
#: is one feed=continuous request, as CouchDB's replicator reads it, not a longpoll per change) with
#: express-pouchdb (a continuous feed's listener and heartbeats stop when its client disconnects; no
#: gzip of responses, as CouchDB), pouchdb-fetch (the replicator keeps its connections open, as
#: CouchDB's does; node-fetch closed each one). pouchdb-adapter-leveldb-core keeps what is read on
#: every request until a write changes it, as CouchDB keeps it in memory: the validation functions
#: (pouchdb-validation), the security object (pouchdb-security) and user documents (pouchdb-auth).
PATCHED_FILES: Mapping[str, tuple[str, ...]] = {
    "pouchdb-validation": ("lib/index.js",),
    "node-fetch": ("lib/index.js",),
    "pouchdb-utils": ("lib/index.js",),
    "pouchdb-changes-filter": ("lib/index.js",),
    "pouchdb-auth": ("lib/sessionapi.js", "lib/utils.js"),
    "pouchdb-server": ("lib/index.js",),
    "pouchdb-replication": ("lib/index.js",),
    "pouchdb-adapter-http": ("lib/index.js",),
    "express-pouchdb": ("lib/routes/changes.js", "lib/compression.js"),
    "pouchdb-adapter-leveldb-core": ("lib/index.js",),
    "pouchdb-security": ("lib/index.js",),
    "pouchdb-fetch": ("lib/index.js",),
}
#: The packages whose nested copies must carry the patch too (the correctness patches). The speed-ups
#: are for the top-level copies pouchdb-server loads with its default leveldb adapter; the nested
#: pouchdb-utils copies serve only --sqlite.
EVERY_COPY = frozenset({"pouchdb-validation", "node-fetch"})
# What the node-fetch patch is for, run against the installed tree: pouchdb's fetch must fail (not wait
# forever) on a response whose connection closes mid-body, as a long-poll does when its server dies.
_CUT_BODY_CHECK = """
const http = require('http');
const {fetch} = require('pouchdb-fetch');
const server = http.createServer((req, res) => {
  res.writeHead(200, {'Content-Type': 'application/json'});
  res.write('{');
  setTimeout(() => req.socket.destroy(), 50);
});
server.listen(0, '127.0.0.1', () => {
  const hang = setTimeout(() => {
    console.error('a response body cut off by a closed connection never failed: node-fetch unpatched');
    process.exit(1);
  }, 5000);
  fetch('http://127.0.0.1:' + server.address().port + '/').then((r) => r.json()).then(
    () => { console.error('a cut-off response body parsed'); process.exit(1); },
    () => { clearTimeout(hang); server.close(); });
});
"""
_T = TypeVar("_T")


# --- state-file serialization ----------------------------------------------------------------------


def to_json(obj: Any) -> Any:
    """A service dataclass (or anything inside one) as plain JSON: Paths become strings, tuples lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(key): to_json(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(value) for value in obj]
    return obj


def from_json(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """Inverse of :func:`to_json` for the dataclass ``cls``, guided by its field annotations."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: _decode(hints[name], data[name]) for name in names if name in data})


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin = typing.get_origin(hint) or hint
    if dataclasses.is_dataclass(origin):
        return from_json(origin, value)  # type: ignore[arg-type]
    if origin is Path:
        return Path(value)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_decode(item, element) for element in value)
    if origin in (Mapping, dict):
        return dict(value)
    return value


# --- processes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceProcess:
    """A process we started: its pid (also its process-group id), the exact argv, and its log file."""

    pid: int
    argv: tuple[str, ...]
    log_file: Path


def process_alive(proc: ServiceProcess) -> bool:
    """True if ``proc.pid`` is running and is still the process we launched (same command line).

    Comparing the command line guards against pid reuse; a zombie has an empty command line and so
    counts as dead.
    """
    return _cmdline(proc.pid) == proc.argv


def _cmdline(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1])


# Popen objects of the children this Python process started, so stopping one also reaps it.
_children: dict[int, tuple[subprocess.Popen[bytes], ServiceProcess]] = {}


def _spawn(
    argv: Sequence[str], *, cwd: Path, log_file: Path, env: Mapping[str, str] | None = None
) -> ServiceProcess:
    """Start ``argv`` in its own session (so its pid is its process group) with output to ``log_file``."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        try:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceStartError(
                f"cannot run {argv[0]}: {exc}", service=argv[0], log_file=str(log_file)
            ) from exc
    proc = ServiceProcess(pid=popen.pid, argv=tuple(argv), log_file=log_file)
    _children[popen.pid] = (popen, proc)
    # Between fork and exec the child still shows *our* command line (and briefly an empty one): wait
    # until it shows the one we launched, so that from now on process_alive() is exact.
    wait_for(
        lambda: popen.poll() is not None or _cmdline(popen.pid) == proc.argv, timeout=5.0, interval=0.005
    )
    return proc


def stop_started_processes(*, timeout: float = STOP_TIMEOUT) -> list[int]:
    """Stop every process this Python process started that still runs (a safety net for test sessions)."""
    stopped = []
    for _, proc in list(_children.values()):
        if stop_process(proc, timeout=timeout):
            stopped.append(proc.pid)
    return stopped


def _gone(proc: ServiceProcess) -> bool:
    child = _children.get(proc.pid)
    if child is not None and child[0].poll() is not None:
        del _children[proc.pid]
    return not process_alive(proc)


def stop_process(proc: ServiceProcess, *, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop a process we started: SIGTERM to its process group, SIGKILL after ``timeout``.

    Does nothing (and returns False) when the pid no longer runs the command we launched, so a reused
    pid is never killed.
    """
    if _gone(proc):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if wait_for(lambda: _gone(proc), timeout=timeout):
            return True
    raise ServiceError(f"process {proc.pid} ({proc.argv[0]}) survived SIGKILL")


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (for one-line error messages; the full text stays in a file)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _log_last_line(path: Path) -> str:
    try:
        return last_line(path.read_text(errors="replace"))
    except OSError:
        return "(no log)"


def _wait_ready(proc: ServiceProcess, service: str, ready: Callable[[], bool], timeout: float) -> None:
    """Wait until ``ready()``; fail fast, naming the log, if the process dies or the deadline passes."""

    def check() -> bool:
        if not process_alive(proc):
            raise ServiceStartError(
                f"{service} exited during start-up: {_log_last_line(proc.log_file)} (log: {proc.log_file})",
                service=service,
                log_file=str(proc.log_file),
            )
        return ready()

    if not wait_for(check, timeout=timeout):
        stop_process(proc)
        raise ServiceStartError(
            f"{service} did not become ready within {timeout:.0f} s: {_log_last_line(proc.log_file)}"
            f" (log: {proc.log_file})",
            service=service,
            log_file=str(proc.log_file),
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open while choosing, so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _http_ok(url: str, *, verify: ssl.SSLContext | bool = True, auth: tuple[str, str] | None = None) -> bool:
    try:
        response = httpx.get(
            url, verify=verify, auth=auth, timeout=2.0, headers={"Accept": "application/json"}
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


# --- installation ----------------------------------------------------------------------------------


def node_dir() -> Path:
    """The directory holding ``package.json``, ``package-lock.json`` and ``patches/`` (repo's ``node/``)."""
    configured = os.environ.get(NODE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / "node"


def pouchdb_server_script(nodes_dir: Path | None = None) -> Path:
    """The pouchdb-server entry point inside ``node_modules``."""
    return (nodes_dir or node_dir()) / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"


def find_binary(name: str) -> str | None:
    """Full path of ``name`` on PATH or in the sbin directories, or None."""
    return shutil.which(name, path=_SEARCH_PATH)


def install_fingerprint(directory: Path) -> str:
    """SHA-256 over package-lock.json and every patch: the npm install is redone when this changes."""
    digest = hashlib.sha256()
    files = [directory / "package-lock.json", *sorted((directory / "patches").glob("*.patch"))]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _run(argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run an install command; raise InstallError with its output when it fails."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        done = subprocess.run(list(argv), cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise InstallError(f"cannot run {argv[0]}: {exc}", command=list(argv)) from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise InstallError(
            f"{' '.join(argv)} failed (exit {done.returncode}): {last_line(output)}",
            command=list(argv),
            output=output,
        )
    return done.stdout


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` itself (no lock file to leave behind or ignore), so two
    installs, or two ``dev up``/``dev down`` on one directory, never interleave."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def apt_install(packages: Sequence[str]) -> None:
    """``apt-get install`` the packages (via ``sudo -n`` when not root); ``apt-get update`` only if needed."""
    if not packages:
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = find_binary("sudo")
        if sudo is None:
            raise InstallError(
                f"missing Debian packages {', '.join(packages)}: install them as root (apt-get install)",
                command=["apt-get", "install", *packages],
            )
        prefix = [sudo, "-n"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", *packages]
    try:
        _run(install, env=env)
    except InstallError:
        # The package lists may be missing or stale (fresh CI image): refresh once, then retry.
        _run([*prefix, "apt-get", "update"], env=env)
        _run(install, env=env)


def ensure_npm_packages(directory: Path | None = None) -> bool:
    """Install the pinned npm packages and apply the patches; return False when already done.

    Install scripts are denied (``--ignore-scripts``): pouchdb-server needs none of them (leveldown loads
    its bundled prebuilds), and sqlite3 would otherwise compile for a minute. patch-package therefore
    runs explicitly instead of from postinstall.
    """
    directory = directory or node_dir()
    marker = directory / "node_modules" / ".certstore-install"
    if not (directory / "package-lock.json").is_file():
        raise InstallError(f"{directory}/package-lock.json not found", command=[])
    with _locked(directory):
        fingerprint = install_fingerprint(directory)
        if (
            marker.is_file()
            and marker.read_text().strip() == fingerprint
            and pouchdb_server_script(directory).is_file()
            and not _unpatched_copies(directory)
        ):
            return False
        npm = find_binary("npm")
        if npm is None:
            raise InstallError("npm not found (install Node.js 20 and npm)", command=["npm"])
        _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=directory)
        _run([str(directory / "node_modules" / ".bin" / "patch-package"), "--error-on-fail"], cwd=directory)
        unpatched = _unpatched_copies(directory)
        if unpatched:
            raise InstallError(f"left unpatched: {', '.join(unpatched)}", command=[])
        node = find_binary("node") or "node"
        _run([node, "-e", "require('leveldown')"], cwd=directory)
        try:
            _run([node, "-e", _CUT_BODY_CHECK], cwd=directory)
        except InstallError as exc:
            raise InstallError(
                f"the node-fetch patch is not in effect: {last_line(exc.output)}",
                command=exc.command,
                output=exc.output,
            ) from exc
        marker.write_text(fingerprint + "\n")
        return True


def _unpatched_copies(directory: Path) -> list[str]:
    """Installed copies of a patched file without the marker, and patched packages not installed."""
    copies = patched_copies(directory)
    missing = [f"{package} (not installed)" for package in PATCHED_FILES if not copies[package]]
    return missing + [
        str(path) for paths in copies.values() for path in paths if _PATCH_MARKER not in path.read_text()
    ]


def patched_copies(directory: Path | None = None) -> dict[str, list[Path]]:
    """package -> the installed copies of the files its patch changes (nested ones: see EVERY_COPY)."""
    root = (directory or node_dir()) / "node_modules"
    return {
        package: sorted(
            path
            for file in files
            for path in root.glob(f"**/{package}/{file}" if package in EVERY_COPY else f"{package}/{file}")
        )
        for package, files in PATCHED_FILES.items()
    }


def ensure_installed(*, npm: bool = True, apt: bool = True, for_tests: bool = False) -> list[str]:
    """Install whatever is missing: Node.js/npm, the npm packages (patched), pebble and BIND9
    (and, ``for_tests``, what only the test suite uses).

    Returns what was installed (empty when everything was already there). Raises InstallError with the
    failing command's output.
    """
    done: list[str] = []
    if apt:
        packages = {**APT_PACKAGES, **(TEST_APT_PACKAGES if for_tests else {})}
        wanted = {binary: pkg for binary, pkg in packages.items() if npm or binary not in _NODE_BINARIES}
        missing = sorted(
            {pkg for binary, pkgs in wanted.items() if find_binary(binary) is None for pkg in pkgs.split()}
        )
        apt_install(missing)
        done.extend(f"apt:{pkg}" for pkg in missing)
    if npm and ensure_npm_packages():
        done.append("npm:pouchdb-server (patched)")
    return done


# --- CouchDB nodes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouchNode:
    """One CouchDB endpoint: a pouchdb-server node we run, or an external CouchDB (``process`` is None).

    ``db_prefix`` is put in front of database names (see :meth:`db_name`): empty for a server of its
    own, non-empty when several nodes share one external server, so each node's replica is its own db.
    """

    name: str
    url: str
    admin_user: str
    admin_password: str
    data_dir: Path | None = None
    process: ServiceProcess | None = None
    db_prefix: str = ""

    @property
    def admin_url(self) -> str:
        """``url`` with the admin credentials embedded (URL-quoted)."""
        return with_credentials(self.url, self.admin_user, self.admin_password)

    @property
    def pid(self) -> int | None:
        """The pouchdb-server pid, None for an external server."""
        return self.process.pid if self.process else None

    @property
    def port(self) -> int:
        """The TCP port of ``url``."""
        port = urllib.parse.urlsplit(self.url).port
        return port if port is not None else 80

    @property
    def external(self) -> bool:
        """True when this node is a server we did not start (and so cannot restart)."""
        return self.process is None

    def db_name(self, name: str) -> str:
        """The database that holds this node's replica of ``name``."""
        return self.db_prefix + name

    def db_url(self, name: str, *, admin: bool = False) -> str:
        """URL of this node's replica of database ``name`` (with credentials when ``admin``)."""
        base = self.admin_url if admin else self.url
        return f"{base}/{urllib.parse.quote(self.db_name(name), safe='')}"

    def alive(self) -> bool:
        """Our process is running (pouchdb) or the server answers (external)."""
        if self.process is not None:
            return process_alive(self.process)
        return _http_ok(self.url + "/")


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` in its netloc, both URL-quoted."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def split_credentials(admin_url: str) -> tuple[str, str, str]:
    """``http://user:pw@host:port/`` → (``http://host:port``, user, password), unquoted."""
    parts = urllib.parse.urlsplit(admin_url)
    if not parts.username or parts.password is None:
        raise ServiceError(
            f"the CouchDB URL must carry admin credentials (http://user:password@host:port): {parts.hostname}"
        )
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return url, urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password)


def external_couch_nodes(admin_url: str, count: int = 1) -> list[CouchNode]:
    """``count`` nodes that all live on one external CouchDB; each gets its own database prefix."""
    url, user, password = split_credentials(admin_url)
    return [
        CouchNode(
            name=f"node{index}",
            url=url,
            admin_user=user,
            admin_password=password,
            db_prefix=f"node{index}-" if count > 1 else "",
        )
        for index in range(1, count + 1)
    ]


def pouchdb_config(
    data_dir: Path, admin_user: str, admin_password: str, existing: Mapping[str, Any]
) -> dict[str, Any]:
    """pouchdb-server's config.json: the admin (hashed by the server on start) and the log file.

    Keeps everything else already in ``existing`` (notably the server uuid, which replication
    checkpoints depend on).
    """
    config = {key: dict(value) if isinstance(value, Mapping) else value for key, value in existing.items()}
    config["admins"] = {admin_user: admin_password}
    log = dict(config.get("log", {}))
    log["file"] = str(data_dir / "log.txt")
    config["log"] = log
    return config


def start_couch_node(
    data_dir: Path,
    *,
    name: str = "node1",
    port: int | None = None,
    admin_user: str = "admin",
    admin_password: str | None = None,
    timeout: float = START_TIMEOUT,
) -> CouchNode:
    """Start a pouchdb-server on 127.0.0.1 with data in ``data_dir`` and an admin; wait until it answers.

    The data persists (no ``--in-memory``), so starting again with the same ``data_dir`` and ``port``
    (see :func:`restart_couch_node`) serves the same databases.
    """
    script = pouchdb_server_script()
    if not script.is_file():
        raise ServiceStartError(
            f"pouchdb-server is not installed in {node_dir()}: run `certstore dev install`", service=name
        )
    node = find_binary("node")
    if node is None:
        raise ServiceStartError("node not found: run `certstore dev install`", service=name)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    password = admin_password or secrets.token_urlsafe(16)
    config_file = data_dir / "config.json"
    existing = json.loads(config_file.read_text()) if config_file.is_file() else {}
    _write_json(config_file, pouchdb_config(data_dir, admin_user, password, existing))
    port = port or free_port()
    argv = [
        node,
        str(script),
        "--port",
        str(port),
        "--host",
        LOOPBACK,
        "--dir",
        str(data_dir) + "/",
        "--config",
        str(config_file),
        "--no-stdout-logs",
    ]
    # Node 20 ends the process on an unhandled rejection; pouchdb-server has a few (see DESIGN.md).
    env = {"NODE_OPTIONS": "--unhandled-rejections=warn"}
    proc = _spawn(argv, cwd=data_dir, log_file=data_dir / "server.log", env=env)
    url = f"http://{LOOPBACK}:{port}"
    # Ready only once the admin is active: until then /_session would accept anyone as admin.
    _wait_ready(proc, f"pouchdb-server {name}", lambda: _admin_active(url, admin_user, password), timeout)
    return CouchNode(
        name=name, url=url, admin_user=admin_user, admin_password=password, data_dir=data_dir, process=proc
    )


def _admin_active(url: str, user: str, password: str) -> bool:
    """The admin is configured: it is an admin, and an anonymous client is not (as during start-up)."""
    return _is_admin(url, user, password) and not _is_admin(url, None, None)


def _is_admin(url: str, user: str | None, password: str | None) -> bool:
    """``/_session`` gives these credentials (None: anonymous) the ``_admin`` role."""
    auth = (user, password) if user is not None and password is not None else None
    try:
        response = httpx.get(
            f"{url}/_session", auth=auth, headers={"Accept": "application/json"}, timeout=2.0
        )
        return response.status_code == 200 and "_admin" in response.json()["userCtx"]["roles"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False


def stop_service(
    service: CouchNode | Pebble | ChallTestSrv | BindServer, *, timeout: float = STOP_TIMEOUT
) -> bool:
    """Stop a service we started (no-op for an external CouchDB); True if a process was stopped."""
    if service.process is None:
        return False
    return stop_process(service.process, timeout=timeout)


def restart_couch_node(node: CouchNode, *, timeout: float = START_TIMEOUT) -> CouchNode:
    """Stop ``node`` (if running) and start it again on the same port, data dir and admin."""
    if node.data_dir is None:
        raise ServiceError(f"{node.name} is an external CouchDB: it cannot be restarted from here")
    stop_service(node)
    return start_couch_node(
        node.data_dir,
        name=node.name,
        port=node.port,
        admin_user=node.admin_user,
        admin_password=node.admin_password,
        timeout=timeout,
    )


# --- pebble ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PebbleOptions:
    """How to run pebble. Ports left None get a free port; chaos settings left None keep pebble's own.

    ``http_port``/``tls_port`` are where pebble *validates* HTTP-01 and TLS-ALPN-01 (the agent's
    responder must listen there). ``eab_keys`` (kid → base64url HMAC key) makes EAB required.
    """

    http_port: int | None = None
    tls_port: int | None = None
    dns_server: str | None = None
    eab_keys: Mapping[str, str] | None = None
    nonce_reject_percent: int | None = None
    authz_reuse_percent: int | None = None
    strict: bool = False
    extra_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pebble:
    """A running pebble ACME CA: its directory URL, the CA file that verifies it, the management API."""

    directory_url: str
    ca_file: Path
    management_url: str
    http_port: int
    tls_port: int
    data_dir: Path
    process: ServiceProcess | None
    dns_server: str | None = None
    eab_keys: Mapping[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        """True while our pebble process runs."""
        return self.process is not None and process_alive(self.process)

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts pebble's listener certificate (for httpx ``verify=``)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def root_pem(self, index: int = 0) -> str:
        """The issuing root (PEM) from the management API; pebble makes a new one on every start."""
        return self._management_get(f"/roots/{index}")

    def intermediate_pem(self, index: int = 0) -> str:
        """The intermediate certificate (PEM) from the management API."""
        return self._management_get(f"/intermediates/{index}")

    def _management_get(self, path: str) -> str:
        try:
            response = httpx.get(self.management_url + path, verify=self.ssl_context(), timeout=5.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ServiceError(f"pebble management API {path}: {exc}") from exc
        return response.text


def pebble_config(
    *,
    port: int,
    management_port: int,
    cert_file: Path,
    key_file: Path,
    http_port: int,
    tls_port: int,
    eab_keys: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """pebble's JSON config (the ``pebble`` object as in /usr/share/doc/pebble/examples/)."""
    config: dict[str, Any] = {
        "listenAddress": f"{LOOPBACK}:{port}",
        "managementListenAddress": f"{LOOPBACK}:{management_port}",
        "certificate": str(cert_file),
        "privateKey": str(key_file),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": bool(eab_keys),
    }
    if eab_keys:
        config["externalAccountMACKeys"] = dict(eab_keys)
    return {"pebble": config}


def pebble_env(options: PebbleOptions) -> dict[str, str]:
    """Environment for pebble: no validation sleeps; chaos overrides only when asked for."""
    env = {"PEBBLE_VA_NOSLEEP": "1"}
    if options.nonce_reject_percent is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(options.nonce_reject_percent)
    if options.authz_reuse_percent is not None:
        env["PEBBLE_AUTHZREUSE"] = str(options.authz_reuse_percent)
    env.update(options.extra_env)
    return env


def write_listener_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A trustme CA and a certificate for ``localhost``/``127.0.0.1``; returns (ca, cert, key) files.

    Reuses the files when they exist, so a restarted pebble keeps the CA its clients already trust.
    """
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    if ca_file.is_file() and cert_file.is_file() and key_file.is_file():
        return ca_file, cert_file, key_file
    try:
        import trustme  # only `dev` and the tests need it: a dev extra
    except ImportError as exc:
        raise ServiceStartError(
            "trustme is not installed (pip install 'certstore[dev]')", service="pebble"
        ) from exc
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", LOOPBACK)
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    with cert_file.open("wb") as handle:
        for blob in leaf.cert_chain_pems:
            handle.write(blob.bytes())
    return ca_file, cert_file, key_file


def start_pebble(
    data_dir: Path,
    options: PebbleOptions | None = None,
    *,
    port: int | None = None,
    management_port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> Pebble:
    """Start pebble on 127.0.0.1 with a fresh listener certificate; wait until ``/dir`` answers."""
    options = options or PebbleOptions()
    binary = find_binary("pebble")
    if binary is None:
        raise ServiceStartError("pebble not found: run `certstore dev install`", service="pebble")
    data_dir = data_dir.resolve()
    ca_file, cert_file, key_file = write_listener_certificate(data_dir)
    spare = iter(free_ports(4))
    port = port or next(spare)
    management_port = management_port or next(spare)
    http_port = options.http_port or next(spare)
    tls_port = options.tls_port or next(spare)
    config_file = data_dir / "pebble-config.json"
    config = pebble_config(
        port=port,
        management_port=management_port,
        cert_file=cert_file,
        key_file=key_file,
        http_port=http_port,
        tls_port=tls_port,
        eab_keys=options.eab_keys,
    )
    _write_json(config_file, config)
    argv = [binary, "-config", str(config_file)]
    if options.dns_server:
        argv += ["-dnsserver", options.dns_server]
    if options.strict:
        argv.append("-strict")
    proc = _spawn(argv, cwd=data_dir, log_file=data_dir / "pebble.log", env=pebble_env(options))
    directory_url = f"https://{LOOPBACK}:{port}/dir"
    _wait_ready(
        proc,
        "pebble",
        lambda: _http_ok(directory_url, verify=ssl.create_default_context(cafile=ca_file)),
        timeout,
    )
    return Pebble(
        directory_url=directory_url,
        ca_file=ca_file,
        management_url=f"https://{LOOPBACK}:{management_port}",
        http_port=http_port,
        tls_port=tls_port,
        data_dir=data_dir,
        process=proc,
        dns_server=options.dns_server,
        eab_keys=dict(options.eab_keys or {}),
    )


# --- pebble-challtestsrv ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChallTestSrv:
    """pebble-challtestsrv as a DNS server only: every A query answers 127.0.0.1; TXT records via its API."""

    dns_address: str
    management_url: str
    data_dir: Path
    process: ServiceProcess | None

    def alive(self) -> bool:
        """True while our challtestsrv process runs."""
        return self.process is not None and process_alive(self.process)

    def set_txt(self, name: str, value: str) -> None:
        """Serve a TXT record (challtestsrv keeps one value per name)."""
        self._post("/set-txt", {"host": _fqdn(name), "value": value})

    def clear_txt(self, name: str) -> None:
        """Stop serving the TXT record of ``name``."""
        self._post("/clear-txt", {"host": _fqdn(name)})

    def set_a(self, name: str, addresses: Sequence[str]) -> None:
        """Answer A queries for ``name`` with ``addresses`` instead of 127.0.0.1 (e.g. 127.0.0.2)."""
        self._post("/add-a", {"host": _fqdn(name), "addresses": list(addresses)})

    def clear_a(self, name: str) -> None:
        """Go back to the default answer (127.0.0.1) for ``name``."""
        self._post("/clear-a", {"host": _fqdn(name)})

    def _post(self, path: str, body: Mapping[str, object]) -> None:
        try:
            httpx.post(self.management_url + path, json=dict(body), timeout=5.0).raise_for_status()
        except httpx.HTTPError as exc:
            raise ServiceError(f"pebble-challtestsrv {path}: {exc}") from exc


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def start_challtestsrv(data_dir: Path, *, timeout: float = START_TIMEOUT) -> ChallTestSrv:
    """Start pebble-challtestsrv with only its DNS server (all names → 127.0.0.1, no AAAA) and its API."""
    binary = find_binary("pebble-challtestsrv")
    if binary is None:
        raise ServiceStartError(
            "pebble-challtestsrv not found: run `certstore dev install`", service="challtestsrv"
        )
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    dns_address = f"{LOOPBACK}:{free_udp_tcp_port()}"
    management_url = f"http://{LOOPBACK}:{free_port()}"
    argv = [
        binary,
        "-dns01",
        dns_address,
        "-management",
        management_url.removeprefix("http://"),
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-defaultIPv4",
        LOOPBACK,
        "-defaultIPv6",
        "",
    ]
    proc = _spawn(argv, cwd=data_dir, log_file=data_dir / "challtestsrv.log")
    host, port = dns_address.split(":")
    _wait_ready(
        proc, "pebble-challtestsrv", lambda: _dns_answers(host, int(port), "ready.test.", "A"), timeout
    )
    return ChallTestSrv(
        dns_address=dns_address, management_url=management_url, data_dir=data_dir, process=proc
    )


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (DNS servers listen on both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise ServiceError("no free UDP+TCP port on 127.0.0.1")


def _dns_answers(host: str, port: int, name: str, rdtype: str) -> bool:
    query = dns.message.make_query(name, rdtype)
    try:
        response = dns.query.udp(query, host, port=port, timeout=0.5)
    except (dns.exception.DNSException, OSError):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


# --- BIND9 -----------------------------------------------------------------------------------------


TSIG_ALGORITHM = "hmac-sha256"


@dataclass(frozen=True)
class BindServer:
    """A BIND9 ``named`` we run: authoritative for ``zones``, accepting TSIG-signed RFC 2136 updates."""

    host: str
    port: int
    zones: tuple[str, ...]
    tsig_key_name: str
    tsig_secret: str
    data_dir: Path
    process: ServiceProcess | None
    tsig_algorithm: str = TSIG_ALGORITHM

    @property
    def address(self) -> str:
        """``host:port``, as pebble's ``-dnsserver`` wants it."""
        return f"{self.host}:{self.port}"

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """The TSIG keyring for dnspython's ``UpdateMessage(keyring=...)``."""
        name = dns.name.from_text(self.tsig_key_name)
        return {name: dns.tsig.Key(name, self.tsig_secret, self.tsig_algorithm)}

    def update_message(self, zone: str) -> dns.update.UpdateMessage:
        """An RFC 2136 update for ``zone`` signed with this server's TSIG key (send with dns.query.tcp)."""
        (key,) = self.keyring().values()
        return dns.update.UpdateMessage(_fqdn(zone), keyring=key)

    def alive(self) -> bool:
        """True while our named process runs."""
        return self.process is not None and process_alive(self.process)


def zone_file_text(zone: str) -> str:
    """A fresh zone: SOA and NS at the apex, the name server resolving to 127.0.0.1."""
    origin = _fqdn(zone)
    return (
        f"$ORIGIN {origin}\n"
        "$TTL 60\n"
        f"@ IN SOA ns1.{origin} hostmaster.{origin} 1 60 60 600 60\n"
        f"@ IN NS ns1.{origin}\n"
        f"ns1 IN A {LOOPBACK}\n"
    )


def named_conf_text(
    directory: Path, port: int, zones: Sequence[str], tsig_key_name: str, tsig_secret: str
) -> str:
    """named.conf for an unprivileged, loopback-only, authoritative server with TSIG dynamic updates."""
    key = tsig_key_name.rstrip(".")
    lines = [
        f'key "{key}" {{ algorithm {TSIG_ALGORITHM}; secret "{tsig_secret}"; }};',
        "options {",
        f'  directory "{directory}";',
        f'  pid-file "{directory / "named.pid"}";',
        f'  session-keyfile "{directory / "session.key"}";',
        f"  listen-on port {port} {{ {LOOPBACK}; }};",
        "  listen-on-v6 { none; };",
        "  recursion no;",
        "  allow-query { any; };",
        "  notify no;",
        "  dnssec-validation no;",
        "};",
        "controls { };",
        "logging { channel out { stderr; severity info; print-time yes; }; category default { out; }; };",
    ]
    for zone in zones:
        name = zone.rstrip(".")
        lines += [
            f'zone "{name}" {{',
            "  type primary;",
            f'  file "{directory / _zone_file_name(name)}";',
            f'  allow-update {{ key "{key}"; }};',
            "};",
        ]
    return "\n".join(lines) + "\n"


def _zone_file_name(zone: str) -> str:
    return f"db.{zone.rstrip('.')}"


def _named_binary(directory: Path) -> str:
    """The named to run. Under AppArmor, Debian's profile confines /usr/sbin/named to /etc/bind and
    /var/lib/bind, so our config and zone files would be unreadable: run a copy, which the profile
    (attached by path) does not cover."""
    binary = find_binary("named")
    if binary is None:
        raise ServiceStartError("named not found: run `certstore dev install`", service="named")
    if not Path("/sys/kernel/security/apparmor").exists():
        return binary
    copy = directory / "named"
    shutil.copy2(binary, copy)
    return str(copy)


def start_bind(
    data_dir: Path,
    zones: Sequence[str],
    tsig_key_name: str = "certstore-update.",
    tsig_secret: str | None = None,
    *,
    port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> BindServer:
    """Start named in the foreground on 127.0.0.1, authoritative for fresh ``zones``; wait for their SOA."""
    if not zones:
        raise ServiceError("start_bind needs at least one zone")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = tsig_secret or base64.b64encode(secrets.token_bytes(32)).decode()
    port = port or free_udp_tcp_port()
    for zone in zones:
        (data_dir / _zone_file_name(zone)).write_text(zone_file_text(zone))
        (data_dir / f"{_zone_file_name(zone)}.jnl").unlink(missing_ok=True)
    conf = data_dir / "named.conf"
    conf.write_text(named_conf_text(data_dir, port, zones, tsig_key_name, secret))
    # -g: foreground, log to stderr. No -u: named keeps the uid it was started with, so as root it can
    # still write the journals in our (root-owned) directory, and unprivileged it needs nothing more.
    argv = [_named_binary(data_dir), "-g", "-4", "-c", str(conf), "-p", str(port)]
    proc = _spawn(argv, cwd=data_dir, log_file=data_dir / "named.log")
    first = _fqdn(zones[0])
    _wait_ready(proc, "named", lambda: _dns_answers(LOOPBACK, port, first, "SOA"), timeout)
    return BindServer(
        host=LOOPBACK,
        port=port,
        zones=tuple(_fqdn(zone) for zone in zones),
        tsig_key_name=_fqdn(tsig_key_name),
        tsig_secret=secret,
        data_dir=data_dir,
        process=proc,
    )


# --- dev state -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevState:
    """What ``dev up`` started in one directory, and (from :func:`dev_status`) whether each part is alive."""

    dir: Path
    nodes: tuple[CouchNode, ...]
    pebble: Pebble | None = None
    challtestsrv: ChallTestSrv | None = None
    bind: BindServer | None = None
    alive: Mapping[str, bool] = field(default_factory=dict)

    @property
    def external_couchdb(self) -> bool:
        """True when the nodes are databases on an external CouchDB."""
        return any(node.external for node in self.nodes)

    def services(self) -> dict[str, CouchNode | Pebble | ChallTestSrv | BindServer]:
        """Every service by name: the nodes, then the DNS server (challtestsrv or BIND) and pebble."""
        found: dict[str, CouchNode | Pebble | ChallTestSrv | BindServer] = {
            node.name: node for node in self.nodes
        }
        if self.challtestsrv is not None:
            found["challtestsrv"] = self.challtestsrv
        if self.bind is not None:
            found["bind"] = self.bind
        if self.pebble is not None:
            found["pebble"] = self.pebble
        return found

    def to_json(self) -> dict[str, Any]:
        """The state file's content (``alive`` is not stored: it is measured when read)."""
        data: dict[str, Any] = to_json(self)
        del data["alive"]
        return {"version": STATE_VERSION, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DevState:
        """Inverse of :meth:`to_json`."""
        if data.get("version") != STATE_VERSION:
            raise ServiceError(f"state file version {data.get('version')!r} is not {STATE_VERSION}")
        return from_json(cls, {key: value for key, value in data.items() if key != "alive"})


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), readable only by the owner (it may hold passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    tmp.replace(path)


def save_state(state: DevState) -> Path:
    """Write ``state`` to ``<dir>/state.json``; returns the file."""
    path = state.dir / STATE_FILE_NAME
    _write_json(path, state.to_json())
    return path


def load_state(directory: Path) -> DevState | None:
    """The state recorded in ``<directory>/state.json``, or None when nothing was started there."""
    path = directory.resolve() / STATE_FILE_NAME
    if not path.is_file():
        return None
    try:
        return DevState.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceError(f"unreadable state file {path}: {exc}") from exc


def dev_status(directory: Path) -> DevState:
    """The recorded state with ``alive`` measured now; an empty state when nothing was started."""
    state = load_state(directory)
    if state is None:
        return DevState(dir=directory.resolve(), nodes=())
    return replace(state, alive={name: service.alive() for name, service in state.services().items()})


def dev_up(
    directory: Path,
    nodes: int = 2,
    *,
    couchdb_url: str | None = None,
    pebble_http_port: int | None = None,
    dns_zones: Sequence[str] = (),
) -> DevState:
    """Start (or keep) ``nodes`` CouchDB nodes, a DNS server and pebble, recorded in ``<dir>/state.json``.

    The DNS server pebble resolves names through is challtestsrv (every name is 127.0.0.1), or, with
    ``dns_zones``, a BIND authoritative for those zones that accepts TSIG-signed updates (DNS-01 for
    real; the caller adds the A records its HTTP-01 names need).

    Running services are left alone; dead ones are started again on their old ports and data dirs.
    With ``couchdb_url`` (an admin URL) no pouchdb-server runs: the nodes are databases on that server.
    ``pebble_http_port`` is where pebble validates HTTP-01 (the agent's responder listens there); by
    default a free port, kept across restarts. The state file is rewritten after every service that
    starts, so a failure half-way leaves a record that ``dev down`` can clean up.
    """
    if nodes < 1:
        raise ServiceError("dev up needs at least one node")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        state = load_state(directory) or DevState(dir=directory, nodes=())
        if couchdb_url:
            external = external_couch_nodes(couchdb_url, nodes)
            if not _is_admin(external[0].url, external[0].admin_user, external[0].admin_password):
                raise ServiceError(
                    f"{external[0].url} does not answer as CouchDB with those admin credentials"
                )
            if any(not node.external and node.alive() for node in state.nodes):
                raise ServiceError(
                    f"{directory} already runs pouchdb-server nodes: `certstore dev down` first"
                )
            state = replace(state, nodes=tuple(external))
            save_state(state)
        elif state.external_couchdb:
            raise ServiceError(f"{directory} is set up for an external CouchDB: `certstore dev down` first")
        else:
            for index in range(1, nodes + 1):
                state = _ensure_node(state, f"node{index}")
                save_state(state)
        state = _ensure_dns(state, dns_zones)
        save_state(state)
        state = _ensure_pebble(state, pebble_http_port)
        save_state(state)
    return dev_status(directory)


def _ensure_dns(state: DevState, zones: Sequence[str]) -> DevState:
    """``state`` with its DNS server running: BIND for ``zones`` if given, challtestsrv otherwise."""
    if not zones:
        dns = state.challtestsrv
        if dns is None or not dns.alive():
            state = replace(state, challtestsrv=start_challtestsrv(state.dir / "challtestsrv"))
        return state
    bind = state.bind
    wanted = tuple(_fqdn(zone) for zone in zones)
    if bind is not None and bind.alive() and bind.zones == wanted:
        return state
    if bind is not None:
        stop_service(bind)
    return replace(
        state,
        bind=start_bind(
            state.dir / "bind",
            zones,
            tsig_secret=bind.tsig_secret if bind else None,
            port=bind.port if bind else None,
        ),
    )


def _ensure_node(state: DevState, name: str) -> DevState:
    """``state`` with node ``name`` running: kept if alive, restarted if dead, started if new."""
    known = {node.name: node for node in state.nodes}
    node = known.get(name)
    if node is None:
        known[name] = start_couch_node(state.dir / name, name=name)
    elif not node.alive():
        known[name] = restart_couch_node(node)
    return replace(state, nodes=tuple(known.values()))


def _ensure_pebble(state: DevState, http_port: int | None) -> DevState:
    """``state`` with pebble running, resolving names through the state's DNS server."""
    dns_address = state.bind.address if state.bind is not None else None
    if dns_address is None and state.challtestsrv is not None:
        dns_address = state.challtestsrv.dns_address
    pebble = state.pebble
    if pebble is not None:
        http_port = http_port or pebble.http_port  # keep the port a running agent may listen on
        if pebble.alive() and pebble.dns_server == dns_address and pebble.http_port == http_port:
            return state
        stop_service(pebble)
    options = PebbleOptions(
        http_port=http_port,
        tls_port=pebble.tls_port if pebble else None,
        dns_server=dns_address,
    )
    return replace(state, pebble=start_pebble(state.dir / "pebble", options))


def dev_down(directory: Path, *, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop every service recorded in ``<directory>/state.json`` (only those) and remove the record.

    Returns the names of the services that were stopped. Data directories are kept.
    """
    directory = directory.resolve()
    if not directory.is_dir():
        return []
    with _locked(directory):
        state = load_state(directory)
        if state is None:
            return []
        stopped = [
            name
            for name, service in reversed(state.services().items())
            if stop_service(service, timeout=timeout)
        ]
        (directory / STATE_FILE_NAME).unlink()
    return stopped
