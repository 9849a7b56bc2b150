"""The exec provider's process handling: argv, environment, exit status, stderr in errors, timeout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from agent.dns import challenge_record, provider_for
from agent.dns.exec import ExecProvider
from agent.errors import ConfigError, DnsUpdateError

SECRET = "hunter2-api-token"


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hook"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o700)
    return path


def test_argv_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTSTORE_COUCHDB_URL", "http://admin:pw@127.0.0.1:5984")  # must not leak
    out = tmp_path / "out.json"
    hook = tmp_path / "hook.py"
    hook.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}), file=f)\n"
    )
    hook.chmod(0o700)
    config = {"zones": ["example.com"], "command": [str(hook), "--flag"], "env": {"API_URL": "https://dns"}}
    provider = provider_for("exec", config, {"API_TOKEN": SECRET})
    record = challenge_record("*.example.com", "va'lue; $(rm -rf /)")
    provider.present([record])
    provider.cleanup()
    calls = [json.loads(line) for line in out.read_text().splitlines()]
    assert [call["argv"] for call in calls] == [
        ["--flag", "add", "_acme-challenge.example.com", "va'lue; $(rm -rf /)"],
        ["--flag", "delete", "_acme-challenge.example.com", "va'lue; $(rm -rf /)"],
    ]
    env = calls[0]["env"]
    assert env["CERTSTORE_DNS_ZONE"] == "example.com"
    assert env["CERTSTORE_DNS_TTL"] == "60"
    assert env["API_URL"] == "https://dns"
    assert env["API_TOKEN"] == SECRET
    assert "CERTSTORE_COUCHDB_URL" not in env
    assert "PATH" in env


def test_failure_quotes_stderr_tail_without_secrets(tmp_path: Path) -> None:
    hook = script(
        tmp_path,
        'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "noise $i" >&2; done\n'
        'printf "auth failed for token %s\\033[0m\\n" "$API_TOKEN" >&2\nexit 3\n',
    )
    provider = provider_for("exec", {"zones": ["example.com"], "command": [str(hook)]}, {"API_TOKEN": SECRET})
    with pytest.raises(DnsUpdateError) as caught:
        provider.present([challenge_record("www.example.com", "v")])
    message = str(caught.value)
    assert "exit status 3" in message and str(hook) in message
    assert "auth failed for token ***" in message
    assert SECRET not in message and "\x1b" not in message
    assert "noise 1 " not in message and "noise 12" in message  # only the tail
    assert provider.added == ()


def test_timeout_kills_the_script_and_its_children(tmp_path: Path) -> None:
    hook = script(tmp_path, "sleep 30 &\nsleep 30\n")  # a grandchild keeps the pipes open
    provider = provider_for("exec", {"zones": ["example.com"], "command": [str(hook)], "timeout": 0.5}, {})
    started = time.monotonic()
    with pytest.raises(DnsUpdateError, match=r"did not finish within 0\.5 s"):
        provider.present([challenge_record("www.example.com", "v")])
    assert time.monotonic() - started < 5


def test_missing_executable(tmp_path: Path) -> None:
    provider = ExecProvider(["example.com"], command=[str(tmp_path / "absent")])
    with pytest.raises(DnsUpdateError, match="cannot run"):
        provider.present([challenge_record("www.example.com", "v")])


@pytest.mark.parametrize(
    ("config", "secrets", "field"),
    [
        ({"command": []}, {}, "command"),
        ({"command": ["relative/hook"]}, {}, "command"),
        ({"command": "/bin/hook add"}, {}, "command"),
        ({"command": ["/bin/true"], "env": {"BAD-NAME": "x"}}, {}, "env"),
        ({"command": ["/bin/true"], "env": ["A=1"]}, {}, "env"),
        ({"command": ["/bin/true"]}, {"1TOKEN": "x"}, "credentials"),
        ({"command": ["/bin/true"], "timeout": -1}, {}, "timeout"),
    ],
)
def test_bad_settings(config: dict[str, object], secrets: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        provider_for("exec", {"zones": ["example.com"], **config}, secrets)
    assert caught.value.field == field
