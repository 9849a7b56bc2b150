"""The agent's configuration: a TOML file plus ``CERTSTORE_AGENT_<FIELD>`` environment overrides.

Every problem is collected and reported at once, one line per field (:class:`AgentConfigErrors`), so
an admin fixes a file in one pass. Secrets (the CouchDB password, the PKCS#12 password) are read
from files named in the config, never written in it, and never shown by ``repr``.

See docs/agent.md for the format and docs/examples/agent.toml for an example.
"""

from __future__ import annotations

import grp
import os
import pwd
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import AgentConfigErrors, ConfigError
from store.couch import ServerURL, redact
from store.errors import CouchError
from store.names import endpoint_problem, name_problem, url_problem

ENV_PREFIX = "CERTSTORE_AGENT_"

T = TypeVar("T")

#: Scalar settings an environment variable may override: dotted field -> kind.
_ENV_FIELDS: dict[str, str] = {
    "server": "str",
    "url": "str",
    "user": "str",
    "password_file": "str",
    "db": "str",
    "state_dir": "str",
    "data_dir": "str",
    "ca_file": "str",
    "heartbeat_interval": "float",
    "responder.listen": "str",
    "responder.advertise": "str",
    "files.owner": "str",
    "files.group": "str",
    "files.keep_removed": "bool",
    "files.keep_versions": "int",
    "files.p12_password_file": "str",
}
_TOP = {
    "server",
    "url",
    "user",
    "password_file",
    "db",
    "state_dir",
    "data_dir",
    "ca_file",
    "heartbeat_interval",
    "responder",
    "files",
    "hooks",
    "credentials",
}
_RESPONDER = {"listen", "advertise"}
_FILES = {"owner", "group", "keep_removed", "keep_versions", "p12_password_file"}
_HOOK = {"command", "timeout"}
_CREDENTIAL = {"live_check", "live_check_timeout", "reload_hook"}


@dataclass(frozen=True)
class HookConfig:
    """A reload hook: an argv list (never a shell string) and a timeout in seconds."""

    name: str
    command: tuple[str, ...]
    timeout: float = 30.0


@dataclass(frozen=True)
class CredentialOptions:
    """Per-credential deploy options on this host; they override the request's fields."""

    live_check: str | None = None
    live_check_timeout: float = 10.0
    reload_hook: str | None = None


@dataclass(frozen=True)
class AgentConfig:
    """A validated agent configuration."""

    server: str
    url: str  # credential-free CouchDB URL
    db: str
    state_dir: Path
    data_dir: Path
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    heartbeat_interval: float = 30.0
    responder_host: str | None = None  # None: no HTTP-01 responder on this host
    responder_port: int = 80
    responder_advertise: str | None = None
    owner_uid: int | None = None
    owner_gid: int | None = None
    keep_removed: bool = False
    keep_versions: int = 2
    p12_password: bytes | None = field(default=None, repr=False)
    hooks: dict[str, HookConfig] = field(default_factory=dict)
    credentials: dict[str, CredentialOptions] = field(default_factory=dict)

    def options_for(self, credential: str) -> CredentialOptions:
        """The deploy options of ``credential`` on this host (defaults when none are configured)."""
        return self.credentials.get(credential, CredentialOptions())


class _Collector:
    """Reads fields from raw TOML data, remembering every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[ConfigError] = []

    def fail(self, name: str, message: str) -> None:
        self.problems.append(ConfigError(message, field=name))

    def get(
        self,
        raw: Mapping[str, Any],
        key: str,
        name: str,
        kind: type[T],
        default: T,
        *,
        required: bool = False,
    ) -> T:
        if key not in raw:
            if required:
                self.fail(name, "is required")
            return default
        value = raw[key]
        # bool is an int in Python; a float field accepts an int (TOML writes 30 for 30.0).
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(name, f"must be a {kind.__name__}, not {type(value).__name__}")
            return default
        return value

    def check(self, name: str, value: str | None, problem: Callable[[str], str | None]) -> None:
        if value is not None:
            reason = problem(value)
            if reason is not None:
                self.fail(name, reason)

    def table(self, raw: Mapping[str, Any], key: str, name: str, allowed: set[str] | None) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.fail(name, f"must be a table, not {type(value).__name__}")
            return {}
        if allowed is not None:
            for unknown in sorted(set(value) - allowed):
                self.fail(
                    f"{name}.{unknown}" if name else unknown,
                    f"is not a known setting (allowed: {', '.join(sorted(allowed))})",
                )
        return value


def _parse_env(name: str, kind: str, text: str) -> Any:
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(
            f"environment variable {ENV_PREFIX}{_env_key(name)} must be true or false", field=name
        )
    if kind in ("int", "float"):
        try:
            return int(text) if kind == "int" else float(text)
        except ValueError:
            raise ConfigError(
                f"environment variable {ENV_PREFIX}{_env_key(name)} must be a number", field=name
            ) from None
    return text


def _env_key(dotted: str) -> str:
    return dotted.replace(".", "_").upper()


def apply_env(raw: dict[str, Any], env: Mapping[str, str], collector: _Collector) -> None:
    """Overlay ``CERTSTORE_AGENT_<FIELD>`` variables (``RESPONDER_LISTEN`` for ``responder.listen``)."""
    for dotted, kind in _ENV_FIELDS.items():
        text = env.get(ENV_PREFIX + _env_key(dotted))
        if text is None:
            continue
        try:
            value = _parse_env(dotted, kind, text)
        except ConfigError as exc:
            collector.problems.append(exc)
            continue
        target = raw
        *parents, leaf = dotted.split(".")
        for parent in parents:
            section = target.setdefault(parent, {})
            if not isinstance(section, dict):
                break
            target = section
        else:
            target[leaf] = value


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``:port`` into ``(host, port)``; raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError('must be "host:port", e.g. "0.0.0.0:80" or "[::]:80"')
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError("port must be 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port  # noqa: S104 - listening on all addresses is the documented default


def _read_secret(c: _Collector, name: str, value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = base / value
    try:
        text = path.read_text().strip()
    except OSError as exc:
        c.fail(name, f"cannot read {path}: {exc.strerror}")
        return None
    if not text:
        c.fail(name, f"{path} is empty")
        return None
    return text


def _resolve_id(c: _Collector, name: str, value: str | None, lookup: Callable[[str], int]) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return lookup(value)
    except KeyError:
        c.fail(name, f"no such {'user' if 'owner' in name else 'group'} {value!r} on this host")
        return None


def parse_config(
    raw: dict[str, Any], *, base: Path, env: Mapping[str, str] | None = None, source: str = "agent config"
) -> AgentConfig:
    """Validate raw TOML data (after env overrides); relative paths are taken from ``base``."""
    c = _Collector()
    apply_env(raw, os.environ if env is None else env, c)
    c.table({"": raw}, "", "", _TOP)
    server = c.get(raw, "server", "server", str, "", required=True)
    c.check("server", server or None, name_problem)
    url_text = c.get(raw, "url", "url", str, "", required=True)
    url = ""
    url_user = url_password = None
    if url_text:
        try:
            parsed = ServerURL.parse(url_text)
            url, url_user, url_password = parsed.url, parsed.user, parsed.password
        except CouchError:
            c.fail("url", f"is not a CouchDB URL: {redact(url_text)!r} (expected http[s]://host:port)")
    user = c.get(raw, "user", "user", str, "") or url_user
    password = (
        _read_secret(c, "password_file", c.get(raw, "password_file", "password_file", str, "") or None, base)
        or url_password
    )
    db = c.get(raw, "db", "db", str, "certstore")
    if not db:
        c.fail("db", "must not be empty")
    state_dir = c.get(raw, "state_dir", "state_dir", str, "", required=True)
    data_dir = c.get(raw, "data_dir", "data_dir", str, "", required=True)
    ca_file = c.get(raw, "ca_file", "ca_file", str, "")
    if ca_file and not (base / ca_file).is_file():
        c.fail("ca_file", f"{base / ca_file} is not a file")
    heartbeat = c.get(raw, "heartbeat_interval", "heartbeat_interval", float, 30.0)
    if not 1.0 <= heartbeat <= 3600.0:
        c.fail("heartbeat_interval", "must be 1-3600 seconds")

    responder = c.table(raw, "responder", "responder", _RESPONDER)
    listen = c.get(responder, "listen", "responder.listen", str, "")
    responder_host: str | None = None
    responder_port = 80
    if listen:
        try:
            responder_host, responder_port = parse_listen(listen)
        except ValueError as exc:
            c.fail("responder.listen", str(exc))
    advertise = c.get(responder, "advertise", "responder.advertise", str, "") or None
    c.check("responder.advertise", advertise, lambda u: url_problem(u, schemes=("http", "https")))

    files = c.table(raw, "files", "files", _FILES)
    uid = _resolve_id(
        c,
        "files.owner",
        c.get(files, "owner", "files.owner", str, "") or None,
        lambda n: pwd.getpwnam(n).pw_uid,
    )
    gid = _resolve_id(
        c,
        "files.group",
        c.get(files, "group", "files.group", str, "") or None,
        lambda n: grp.getgrnam(n).gr_gid,
    )
    keep_removed = c.get(files, "keep_removed", "files.keep_removed", bool, False)
    keep_versions = c.get(files, "keep_versions", "files.keep_versions", int, 2)
    if not 1 <= keep_versions <= 100:
        c.fail("files.keep_versions", "must be 1-100 (the live version counts)")
    p12_password = _read_secret(
        c,
        "files.p12_password_file",
        c.get(files, "p12_password_file", "files.p12_password_file", str, "") or None,
        base,
    )

    hooks: dict[str, HookConfig] = {}
    for hook_name, hook_raw in c.table(raw, "hooks", "hooks", None).items():
        where = f"hooks.{hook_name}"
        c.check(where, hook_name, name_problem)
        if not isinstance(hook_raw, dict):
            c.fail(where, "must be a table with command = [...]")
            continue
        c.table({"": hook_raw}, "", where, _HOOK)
        command = c.get(hook_raw, "command", f"{where}.command", list, [], required=True)
        if "command" in hook_raw and (not command or not all(isinstance(a, str) and a for a in command)):
            c.fail(f"{where}.command", "must be a non-empty list of strings (an argv, never a shell line)")
        timeout = c.get(hook_raw, "timeout", f"{where}.timeout", float, 30.0)
        if not 0.1 <= timeout <= 3600:
            c.fail(f"{where}.timeout", "must be 0.1-3600 seconds")
        hooks[hook_name] = HookConfig(hook_name, tuple(str(a) for a in command), timeout)

    credentials: dict[str, CredentialOptions] = {}
    for cred_name, cred_raw in c.table(raw, "credentials", "credentials", None).items():
        where = f"credentials.{cred_name}"
        c.check(where, cred_name, name_problem)
        if not isinstance(cred_raw, dict):
            c.fail(where, "must be a table")
            continue
        c.table({"": cred_raw}, "", where, _CREDENTIAL)
        live_check = c.get(cred_raw, "live_check", f"{where}.live_check", str, "") or None
        c.check(f"{where}.live_check", live_check, endpoint_problem)
        live_timeout = c.get(cred_raw, "live_check_timeout", f"{where}.live_check_timeout", float, 10.0)
        if not 0.1 <= live_timeout <= 600:
            c.fail(f"{where}.live_check_timeout", "must be 0.1-600 seconds")
        hook = c.get(cred_raw, "reload_hook", f"{where}.reload_hook", str, "") or None
        if hook is not None and hook not in hooks:
            c.fail(
                f"{where}.reload_hook", f"names no hook configured here (hooks: {', '.join(hooks) or 'none'})"
            )
        credentials[cred_name] = CredentialOptions(live_check, live_timeout, hook)

    if c.problems:
        raise AgentConfigErrors(source, c.problems)
    return AgentConfig(
        server=server,
        url=url,
        db=db,
        state_dir=(base / state_dir).absolute(),
        data_dir=(base / data_dir).absolute(),
        user=user or None,
        password=password,
        ca_file=(base / ca_file).absolute() if ca_file else None,
        heartbeat_interval=heartbeat,
        responder_host=responder_host,
        responder_port=responder_port,
        responder_advertise=advertise,
        owner_uid=uid,
        owner_gid=gid,
        keep_removed=keep_removed,
        keep_versions=keep_versions,
        p12_password=p12_password.encode() if p12_password else None,
        hooks=hooks,
        credentials=credentials,
    )


def load_config(path: Path, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate a config file; relative paths in it are relative to the file's directory."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the agent config {path}: {exc.strerror}", field=None) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", field=None) from None
    return parse_config(raw, base=Path(path).absolute().parent, env=env, source=str(path))
