"""Agent configuration: TOML plus CERTSTORE_AGENT_* overrides; every problem reported by field."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config, parse_listen
from agent.errors import AgentConfigErrors, ConfigError

GOOD = """
server = "web1"
url = "http://server-web1:pw@127.0.0.1:5984"
db = "certstore"
state_dir = "state"
data_dir = "/var/lib/certstore/keyring"
heartbeat_interval = 15

[responder]
listen = "[::]:8080"
advertise = "http://web1.example.net"

[files]
keep_removed = true
p12_password_file = "p12.pw"

[hooks.nginx]
command = ["systemctl", "reload", "nginx"]
timeout = 20

[credentials.site]
live_check = "127.0.0.1:443"
reload_hook = "nginx"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    (tmp_path / "p12.pw").write_text("p12-secret\n")
    return path


def test_good_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env={})
    assert isinstance(config, AgentConfig)
    assert config.server == "web1" and config.url == "http://127.0.0.1:5984"
    assert config.user == "server-web1" and config.password == "pw"
    assert config.state_dir == tmp_path / "state"
    assert config.data_dir == Path("/var/lib/certstore/keyring")
    assert (config.responder_host, config.responder_port) == ("::", 8080)
    assert config.keep_removed and config.p12_password == b"p12-secret"
    assert config.hooks["nginx"].command == ("systemctl", "reload", "nginx")
    assert config.options_for("site").live_check == "127.0.0.1:443"
    assert config.options_for("other").live_check is None
    assert "pw" not in repr(config) and "p12-secret" not in repr(config)


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        "CERTSTORE_AGENT_SERVER": "web2",
        "CERTSTORE_AGENT_RESPONDER_LISTEN": "127.0.0.1:0",
        "CERTSTORE_AGENT_FILES_KEEP_REMOVED": "false",
        "CERTSTORE_AGENT_HEARTBEAT_INTERVAL": "5",
    }
    config = load_config(write(tmp_path, GOOD), env=env)
    assert config.server == "web2" and config.responder_port == 0 and not config.keep_removed
    assert config.heartbeat_interval == 5.0


def test_every_problem_is_reported_by_field(tmp_path: Path) -> None:
    bad = """
server = "Web 1"
url = "ftp://x"
state_dir = 3
heartbeat_interval = 0
colour = "blue"
[responder]
listen = "nowhere"
advertise = "gopher://x"
[files]
owner = "no-such-user-certstore"
keep_versions = 0
p12_password_file = "missing.pw"
[hooks.bad]
command = "systemctl reload nginx"
timeout = -1
[credentials.site]
live_check = "not an endpoint"
reload_hook = "missing"
"""
    with pytest.raises(AgentConfigErrors) as info:
        load_config(write(tmp_path, bad), env={"CERTSTORE_AGENT_FILES_KEEP_REMOVED": "maybe"})
    fields = {p.field for p in info.value.problems}
    assert fields >= {
        "server",
        "url",
        "state_dir",
        "data_dir",
        "heartbeat_interval",
        "colour",
        "responder.listen",
        "responder.advertise",
        "files.owner",
        "files.keep_versions",
        "files.p12_password_file",
        "hooks.bad.command",
        "hooks.bad.timeout",
        "credentials.site.live_check",
        "credentials.site.reload_hook",
        "files.keep_removed",
    }
    assert "ftp://x" in str(info.value)


def test_password_never_in_errors(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigErrors) as info:
        load_config(write(tmp_path, 'url = "http://u:topsecret@:bad"\n'), env={})
    assert "topsecret" not in str(info.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "server = "), env={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:80", ("0.0.0.0", 80)), (":80", ("0.0.0.0", 80)), ("[::1]:8080", ("::1", 8080))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["80", "host:", "host:99999", "host:http"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)
