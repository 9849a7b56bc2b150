"""The console script's fast path for ``certstore agent run`` and the one-line error contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.main import CONFIG_ENV, agent_run_request

LEAN = ("typer", "click", "pydantic", "rich", "watchdog")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["agent", "run", "--config", "a.toml"], {}, (False, Path("a.toml"))),
        (["agent", "run", "-c", "a.toml"], {}, (False, Path("a.toml"))),
        (["agent", "run", "--config=a.toml"], {}, (False, Path("a.toml"))),
        (["-v", "agent", "run", "--config", "a.toml"], {}, (True, Path("a.toml"))),
        (
            ["--verbose", "agent", "run"],
            {CONFIG_ENV: "/etc/certstore/agent.toml"},
            (True, Path("/etc/certstore/agent.toml")),
        ),
        (["agent", "run", "--config", "a.toml"], {CONFIG_ENV: "b.toml"}, (False, Path("a.toml"))),
        # Everything else goes to the typer app, which explains it as it always has.
        (["agent", "run"], {}, None),
        (["agent", "run"], {CONFIG_ENV: ""}, None),
        (["agent", "run", "--help"], {}, None),
        (["agent", "run", "--config"], {}, None),
        (["agent", "run", "--config", "--help"], {}, None),
        (["agent", "run", "--config="], {}, None),
        (["agent", "run", "--config", "a.toml", "--extra"], {}, None),
        (["agent", "status", "--config", "a.toml"], {}, None),
        (["--version"], {}, None),
        ([], {}, None),
    ],
)
def test_only_a_plain_agent_run_takes_the_fast_path(
    argv: list[str], env: dict[str, str], expected: tuple[bool, Path] | None
) -> None:
    assert agent_run_request(argv, env) == expected


def run_main(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Run the console script's function and list which command-line libraries it loaded.
    code = (
        "import sys\n"
        "from agent.main import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        f"    print('loaded:', sorted(m for m in {LEAN!r} if m in sys.modules))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )


def test_agent_run_loads_no_command_line_library_and_reports_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('server = "web1"\nurl = "ftp://nowhere"\n')
    result = run_main(["agent", "run", "--config", "agent.toml"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("certstore: error: agent.toml: "), result.stderr
    assert "url" in lines[0]
    assert "loaded: []" in result.stdout


def test_a_missing_config_file_is_one_line_too(tmp_path: Path) -> None:
    result = run_main(["agent", "run", "-c", "missing.toml"], tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr
        == "certstore: error: cannot read the agent config missing.toml: No such file or directory\n"
    )


def test_other_command_lines_get_the_full_cli(tmp_path: Path) -> None:
    result = run_main(["agent", "run", "--help"], tmp_path)
    assert result.returncode == 0
    assert "--config" in result.stdout and "typer" in result.stdout  # the typer app answered
    result = run_main(["agent", "run"], tmp_path)
    assert result.returncode == 2
    assert "Missing option '--config'" in result.stderr


def test_push_all_without_a_server_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = run_main(
        ["replicate", "add", "--hub", "http://127.0.0.1:9", "--replica", "http://127.0.0.1:9", "--push-all"],
        tmp_path,
    )
    assert result.returncode == 2
    assert "--push-all" in result.stderr and "only with --server" in result.stderr
    assert "Traceback" not in result.stderr
