"""docker-compose.yml, the Dockerfile and docker/: checked without Docker (nothing here can run it).

The compose file is parsed and every reference in it is followed into the repository: build contexts,
bind-mounted files, named volumes, the scripts the containers run, and every ``certstore`` command
(in ``entrypoint``/``command``, in the scripts under docker/ and in docs/deploy-docker.md and
docs/fauxton.md), which is
resolved against the real typer app: the subcommand path must exist and each ``--option`` must be
one that command declares. The settings that must agree across files (the agent config, pebble's
HTTP-01 port, the dry run's DNS answer, the secrets volumes) are compared too.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer.main

from agent.cli import app
from agent.config import parse_config
from store.couch import CouchClient

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse docker-compose.yml (the dev extra)")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_DOC = ROOT / "docs" / "deploy-docker.md"
#: Documentation whose `certstore ...` command lines are checked like the compose file's.
DOCS = (DEPLOY_DOC, ROOT / "docs" / "fauxton.md")
ENV_EXAMPLE = ROOT / "docker" / "env.example"
#: Where the Dockerfile puts the repository inside the image (its WORKDIR for `COPY ... ./`).
IMAGE_SOURCE = PurePosixPath("/opt/certstore")

# `certstore` at a command position of a shell line: its start, after `exec`, or inside `$(`.
_SHELL_CALL = re.compile(r"(?:^|\$\(|\bexec\s+)certstore\s+(.*)$")
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
_WORD = re.compile(r"[a-z][a-z0-9-]*")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def env_defaults() -> dict[str, str]:
    """docker/env.example as a dict (what ${VAR} resolves to after `cp docker/env.example .env`)."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(text: str) -> str:
    """Resolve ${VAR}, ${VAR:-default} and ${VAR:?message} the way compose does with docker/env.example."""
    env = env_defaults()

    def value(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in env and (env[name] or op != ":-"):
            return env[name]
        if op == ":?":
            raise AssertionError(f"${{{name}}} is required and docker/env.example does not set it")
        return rest

    return re.sub(r"\$\{([A-Z0-9_]+)(:-|:\?|-)?([^}]*)\}", value, text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value)) for key, value in raw.items()}


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(item) for item in value]


def mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            yield str(entry["source"]), str(entry["target"])
        else:
            source, target = entry.split(":")[:2]
            yield source, target


def mount_source(service: dict[str, Any], target: str) -> str:
    for source, mounted in mounts(service):
        if mounted == target:
            return source
    raise AssertionError(f"nothing is mounted on {target}")


def built_here(service: dict[str, Any]) -> bool:
    return "build" in service


def dockerfile_entrypoint() -> list[str]:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            entrypoint: list[str] = json.loads(line.removeprefix("ENTRYPOINT"))
            return entrypoint
    return []


def repo_path(image_path: str) -> Path:
    """The repository file an absolute path inside the image comes from (copied under /opt/certstore)."""
    relative = PurePosixPath(image_path).relative_to(IMAGE_SOURCE)
    return ROOT / relative


# --- finding certstore commands ------------------------------------------------------------------


def strip_comment(line: str) -> str:
    """The line without a trailing shell comment (a # outside quotes, at a word start)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def shell_lines(text: str) -> Iterator[str]:
    """Logical lines of a shell script: comments and here-document bodies dropped, continuations joined."""
    pending = ""
    heredoc_end: str | None = None
    for raw in text.splitlines():
        if heredoc_end is not None:
            if raw.strip() == heredoc_end:
                heredoc_end = None
            continue
        line = strip_comment(raw).rstrip()
        marker = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if marker and "<<<" not in line:
            heredoc_end = marker.group(1)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def script_calls(text: str) -> list[list[str]]:
    """The certstore invocations in a shell script: subcommand words, then the options used."""
    calls = []
    for line in shell_lines(text):
        match = _SHELL_CALL.search(line.strip())
        if match is not None:
            calls.append(words_and_options(match.group(1)))
    return calls


def words_and_options(rest: str) -> list[str]:
    """Leading subcommand words (plain words), then every --option in the rest of the command."""
    tokens = rest.split()
    words = []
    for token in tokens:
        if _WORD.fullmatch(token) is None:
            break
        words.append(token)
    return words + _OPTION.findall(rest)


def service_calls(service: dict[str, Any]) -> list[list[str]]:
    entrypoint = as_list(service.get("entrypoint"))
    if not entrypoint and built_here(service):
        entrypoint = dockerfile_entrypoint()
    if entrypoint[:1] == ["certstore"]:
        return [words_and_options(" ".join(entrypoint[1:] + as_list(service.get("command"))))]
    return []


def service_scripts(service: dict[str, Any]) -> list[Path]:
    """The repository files a service's entrypoint runs from the image (bash/python3 SCRIPT ...)."""
    entrypoint = as_list(service.get("entrypoint"))
    return [repo_path(arg) for arg in entrypoint[1:2] if arg.startswith(f"{IMAGE_SOURCE}/")]


def doc_calls(doc: Path) -> list[list[str]]:
    """The `docker compose run --rm cli ...` and `certstore ...` lines of a document."""
    calls = []
    for line in doc.read_text().splitlines():
        line = strip_comment(line.strip())
        for prefix in ("docker compose run --rm cli ", "certstore "):
            if line.startswith(prefix):
                calls.append(words_and_options(line.removeprefix(prefix)))
    return calls


def resolve(call: list[str]) -> None:
    """Fail unless ``call`` (subcommand words, then options) is a command of the certstore CLI."""
    command: Any = typer.main.get_command(app)
    words = [token for token in call if not token.startswith("--")]
    path: list[str] = []
    for word in words:
        children = getattr(command, "commands", None)
        if children is None:
            break  # a positional argument of the command reached
        assert word in children, f"`certstore {' '.join([*path, word])}` is not a command"
        command = children[word]
        path.append(word)
    assert getattr(command, "commands", None) is None, f"`certstore {' '.join(path)}` needs a subcommand"
    declared = {"--help"}
    for param in command.params:
        declared.update(opt for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--"))
    for option in (token for token in call if token.startswith("--")):
        assert option in declared, f"`certstore {' '.join(path)}` has no option {option}"


def all_calls() -> list[tuple[str, list[str]]]:
    found = []
    scripts: set[Path] = set()
    for name, service in services().items():
        found += [(f"service {name}", call) for call in service_calls(service)]
        scripts.update(script for script in service_scripts(service) if script.suffix == ".sh")
    for script in sorted(scripts):
        found += [(str(script.relative_to(ROOT)), call) for call in script_calls(script.read_text())]
    for doc in DOCS:
        found += [(str(doc.relative_to(ROOT)), call) for call in doc_calls(doc)]
    return found


# --- the tests -----------------------------------------------------------------------------------


def test_the_compose_file_has_the_fleet() -> None:
    names = set(services())
    assert {"couch-hub", "couch-web1", "couch-web2", "init", "certmgr", "agent-web1", "agent-web2"} <= names
    assert {"pebble", "challtestsrv"} <= names
    for name in ("couch-hub", "couch-web1", "couch-web2"):
        assert services()[name]["image"] == "couchdb:3"
    assert services()["pebble"]["image"].startswith("ghcr.io/letsencrypt/pebble:")
    assert services()["challtestsrv"]["image"].startswith("ghcr.io/letsencrypt/pebble-challtestsrv:")


def test_every_build_context_exists_with_its_dockerfile() -> None:
    built = [service for service in services().values() if built_here(service)]
    assert built, "nothing is built from this repository"
    for service in built:
        build = service["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (context / dockerfile).is_file(), context / dockerfile


def test_the_dockerfile_copies_what_exists_and_dockerignore_keeps_it() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = 0
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
                assert source not in ignored, f".dockerignore leaves {source} out of the build context"
                copied += 1
    assert copied >= 4
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE.read_text(), re.MULTILINE)
    assert dockerfile_entrypoint() == ["certstore"]


def test_every_mount_is_a_repo_path_or_a_declared_volume() -> None:
    declared = set(compose().get("volumes") or {})
    used = set()
    for name, service in services().items():
        for source, _target in mounts(service):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in declared, f"{name} mounts volume {source}, which is not declared"
                used.add(source)
    assert declared == used, f"declared but unused volumes: {declared - used}"


def test_every_script_a_service_runs_exists() -> None:
    scripts = [script for service in services().values() for script in service_scripts(service)]
    assert {path.name for path in scripts} >= {"init.sh", "run.sh", "pebble-cert.py"}
    for script in scripts:
        assert script.is_file(), script


def test_every_file_a_script_uses_exists() -> None:
    # Scripts find their helpers next to themselves: $(dirname "$0")/<file>.
    for script in (ROOT / "docker").glob("*.sh"):
        for name in re.findall(r'\$\(dirname "\$0"\)/([\w.-]+)', script.read_text()):
            assert (script.parent / name).is_file(), f"{script.name} uses {name}, which does not exist"
    assert "couch_setup.py" in (ROOT / "docker" / "init.sh").read_text()


def test_depends_on_names_services() -> None:
    for name, service in services().items():
        for other in service.get("depends_on") or {}:
            assert other in services(), f"{name} depends on unknown service {other}"


def test_every_certstore_command_is_a_real_command() -> None:
    calls = all_calls()
    seen = {" ".join(word for word in call if not word.startswith("--")) for _, call in calls}
    # The commands the fleet cannot run without must be among them.
    for expected in ("init", "server add-user", "replicate add", "server enroll", "certmgr run", "agent run"):
        assert any(command.startswith(expected) for command in seen), f"nothing runs `certstore {expected}`"
    for where, call in calls:
        try:
            resolve(call)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None


def test_the_command_check_catches_mistakes() -> None:
    resolve(["server", "enroll", "--state-dir", "--certmgr"])
    for bad in (["server", "enrol"], ["server"], ["status", "--colour"], ["replicate", "add", "--from"]):
        with pytest.raises(AssertionError):
            resolve(bad)
    script = 'x=1  # certstore nonsense\nout=$(certstore server add-user "$n" --url "$(u "$n")")\n'
    script += "exec certstore agent run \\\n  --config c.toml\npython3 - <<'PY'\ncertstore bogus\nPY\n"
    assert script_calls(script) == [["server", "add-user", "--url"], ["agent", "run", "--config"]]


def test_the_agent_config_is_valid_for_every_agent(tmp_path: Path) -> None:
    raw_text = (ROOT / "docker" / "agent.toml").read_text()
    agents = {
        name: service
        for name, service in services().items()
        if "/etc/certstore/agent.toml" in {target for _, target in mounts(service)}
    }
    assert set(agents) == {"agent-web1", "agent-web2"}
    pebble_config = json.loads((ROOT / "docker" / "pebble-config.json").read_text())["pebble"]
    for name, service in agents.items():
        assert mount_source(service, "/etc/certstore/agent.toml") == "./docker/agent.toml"
        raw = tomllib.loads(raw_text)
        # The password file comes from the secrets volume at run time; everything else must parse.
        password_file = raw.pop("password_file")
        assert PurePosixPath(password_file).parent == PurePosixPath("/run/certstore")
        config = parse_config(raw, base=tmp_path, env=environment(service), source=name)
        assert f"agent-{config.server}" == name
        assert config.url == f"http://couch-{config.server}:5984"
        assert str(config.state_dir) == "/var/lib/certstore/state"
        assert str(config.data_dir) == "/var/lib/certstore/data"
        assert mount_source(service, str(config.state_dir)) == f"{config.server}-state"
        assert mount_source(service, str(config.data_dir)) == f"{config.server}-data"
        assert mount_source(service, "/run/certstore") == f"{config.server}-secrets"
        assert config.responder_port == pebble_config["httpPort"], "pebble must reach the responders"
        assert config.responder_advertise == f"http://{name}:{config.responder_port}"


def test_init_knows_every_server_and_hands_each_its_secrets() -> None:
    init = services()["init"]
    env = environment(init)
    servers = env["CERTSTORE_SERVERS"].split()
    agents = sorted(
        environment(s)["CERTSTORE_AGENT_SERVER"]
        for s in services().values()
        if "CERTSTORE_AGENT_SERVER" in environment(s)
    )
    assert sorted(servers) == agents
    for server in servers:
        assert f"couch-{server}" in services()
        assert mount_source(init, f"/secrets/{server}") == f"{server}-secrets"
        assert "init" in services()[f"agent-{server}"]["depends_on"]
    certmgr = services()["certmgr"]
    name = environment(certmgr)["CERTSTORE_SERVER"]
    assert env["CERTSTORE_CERTMGR"] == name
    assert mount_source(init, f"/secrets/{name}") == mount_source(certmgr, "/run/certstore")
    assert environment(certmgr)["CERTSTORE_COUCH"] == "http://couch-hub:5984"


def test_the_dry_run_fits_together() -> None:
    pebble_config = json.loads((ROOT / "docker" / "pebble-config.json").read_text())["pebble"]
    pebble = services()["pebble"]
    certs_dir = PurePosixPath(pebble_config["certificate"]).parent
    assert PurePosixPath(pebble_config["privateKey"]).parent == certs_dir
    assert mount_source(pebble, str(certs_dir)) == "pebble-certs"
    assert mount_source(services()["pebble-cert"], str(certs_dir)) == "pebble-certs"
    config_path = as_list(pebble["command"])[as_list(pebble["command"]).index("-config") + 1]
    assert mount_source(pebble, config_path) == "./docker/pebble-config.json"
    # The certmgr trusts the CA the pebble-cert service writes.
    certmgr = services()["certmgr"]
    ca_file = PurePosixPath(environment(certmgr)["CERTSTORE_ACME_CA_FILE"])
    assert mount_source(certmgr, str(ca_file.parent)) == "pebble-certs"
    # challtestsrv answers every name with agent-web1's fixed address, inside the fleet's subnet.
    command = as_list(services()["challtestsrv"]["command"])
    address = command[command.index("-defaultIPv4") + 1]
    assert services()["agent-web1"]["networks"]["fleet"]["ipv4_address"] == address
    subnet = compose()["networks"]["fleet"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)


def test_no_secret_is_written_into_the_compose_file() -> None:
    text = COMPOSE.read_text()
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "SECRET" in key:
                assert str(value).startswith("${"), f"{name}: {key} must come from .env"
    assert "CHANGE-ME" not in text
    assert "CHANGE-ME" in env_defaults()["COUCHDB_PASSWORD"]


# --- docker/couch_setup.py against a real server -------------------------------------------------


def run_setup(*args: str) -> subprocess.CompletedProcess[str]:
    script = ROOT / "docker" / "couch_setup.py"
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.integration
def test_couch_setup_makes_the_system_databases(couch_server: Any) -> None:
    first = run_setup("system-dbs", couch_server.admin_url)
    assert first.returncode == 0, first.stderr
    again = run_setup("system-dbs", couch_server.admin_url)
    assert (again.returncode, again.stdout) == (0, "system databases: exist\n"), again.stderr
    with CouchClient(couch_server.admin_url) as client:
        assert {"_users", "_replicator"} <= set(client.all_dbs())


def test_couch_setup_usage_and_errors() -> None:
    assert run_setup().returncode == 2
    failed = run_setup("system-dbs", "http://admin:pw@127.0.0.1:1")
    assert failed.returncode == 1
    assert failed.stderr.startswith("couch_setup: error:") and len(failed.stderr.splitlines()) == 1
    assert "pw" not in failed.stderr.replace("couch_setup", "")
