"""DNS-01 through an admin's script: ``<command...> add|delete <fqdn> <value>``, never through a shell.

Settings of the ``dns:`` document (besides ``zones``, ``ttl``, ``nameservers``): ``command`` (argv list; the
first element an absolute path), ``timeout`` (seconds, default 60) and ``env`` (extra, non-secret
environment variables). Credentials: each one is passed as an environment variable of the same name.

The script sees a small environment, not the certmgr's (which may hold database credentials): ``PATH``,
``HOME``, ``LANG``, ``LC_ALL``, ``TZ`` when set, then ``env``, the credentials, and
``CERTSTORE_DNS_ZONE`` / ``CERTSTORE_DNS_TTL``. ``add`` must add the value next to any others on the name
(not replace them) and ``delete`` must remove only that value. Exit status 0 means done; anything else is
an error that quotes the tail of the script's stderr (credentials cut out).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Self

from agent.dns.base import (
    DEFAULT_TTL,
    DnsProvider,
    config_number,
    config_str_list,
    printable_tail,
    redact,
)
from agent.errors import ConfigError, DnsUpdateError
from store.names import show

DEFAULT_TIMEOUT = 60.0
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_env(env: Mapping[str, Any], field: str) -> dict[str, str]:
    for key, value in env.items():
        if not isinstance(key, str) or _ENV_NAME_RE.fullmatch(key) is None:
            raise ConfigError(f"{show(key)} is not an environment variable name", field=field)
        if not isinstance(value, str) or "\0" in value:
            raise ConfigError(f"the value of {key} must be a string without NUL", field=field)
    return dict(env)


class ExecProvider(DnsProvider):
    """Runs a configured executable to add and delete TXT values."""

    kind = "exec"

    def __init__(
        self,
        zones: Sequence[str],
        *,
        command: Sequence[str],
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        ttl: int = DEFAULT_TTL,
        nameservers: Sequence[str] = (),
    ) -> None:
        secret_env = _check_env(secrets or {}, "credentials")
        super().__init__(zones, ttl=ttl, nameservers=nameservers, secrets=secret_env.values())
        if not command or not os.path.isabs(command[0]):
            raise ConfigError(
                "command must be a list whose first element is an absolute path", field="command"
            )
        self.command = tuple(command)
        self.timeout = timeout
        self._env = {**_check_env(env or {}, "env"), **secret_env}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Self:
        """Settings ``command``, ``timeout``, ``env``; every credential becomes an environment variable."""
        env = config.get("env", {})
        if not isinstance(env, Mapping):
            raise ConfigError("env must be a mapping of variable names to strings", field="env")
        return cls(
            command=config_str_list(config, "command"),
            timeout=config_number(config, "timeout", default=DEFAULT_TIMEOUT, low=0.1, high=3600),
            env=env,
            secrets=secrets,
            **cls.base_options(config),
        )

    def _add_txt(self, zone: str, fqdn: str, value: str) -> None:
        self._run("add", zone, fqdn, value)

    def _delete_txt(self, zone: str, fqdn: str, value: str) -> None:
        self._run("delete", zone, fqdn, value)

    def _environment(self, zone: str) -> dict[str, str]:
        env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(self._env)
        env.update({"CERTSTORE_DNS_ZONE": zone, "CERTSTORE_DNS_TTL": str(self.ttl)})
        return env

    def _run(self, action: str, zone: str, fqdn: str, value: str) -> None:
        argv = [*self.command, action, fqdn, value]
        what = f"{self.command[0]} {action} {fqdn}"
        try:
            # Own session: on timeout the whole process group dies, so a grandchild holding the
            # pipes open cannot make us wait past the deadline.
            proc = subprocess.Popen(
                argv,
                env=self._environment(zone),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise DnsUpdateError(f"cannot run {what}: {exc.strerror}", provider=self.kind) from exc
        try:
            _, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise DnsUpdateError(
                f"{what} did not finish within {self.timeout:g} s (killed)", provider=self.kind
            ) from exc
        if proc.returncode != 0:
            tail = printable_tail(redact(stderr.decode("utf-8", "replace"), self._secrets))
            raise DnsUpdateError(
                f"{what} failed (exit status {proc.returncode})" + (f": {tail}" if tail else ""),
                provider=self.kind,
            )
