"""How the command line fails: one line on stderr and a documented exit code."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from takler_cli.main import get_app, main
from takler_cli.output import (
    EXIT_REFUSED,
    EXIT_SERVER_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code_for,
)

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_takler_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TAKLER_HOST", "TAKLER_PORT", "TAKLER_TOKEN", "TAKLER_CAFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TAKLER_HOME", str(tmp_path / "home"))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_exits_4_with_one_line() -> None:
    result = runner.invoke(get_app(), ["ping", "--host", "127.0.0.1", "--port", str(closed_port())])
    assert result.exit_code == EXIT_UNREACHABLE
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("takler ping: ")
    assert "Traceback" not in result.stderr


def test_no_server_file_and_no_port_exits_4_naming_the_file(tmp_path: Path) -> None:
    result = runner.invoke(get_app(), ["show", "/x", "--home", str(tmp_path / "empty")])
    assert result.exit_code == EXIT_UNREACHABLE
    assert "server.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_port_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("TAKLER_PORT", str(port))
    result = runner.invoke(get_app(), ["ping"])
    assert result.exit_code == EXIT_UNREACHABLE
    assert str(port) in result.stderr


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(get_app(), ["ping", "--no-such-option"]).exit_code == EXIT_USAGE
    assert runner.invoke(get_app(), ["force", "sideways", "/f/t"]).exit_code == EXIT_USAGE
    assert runner.invoke(get_app(), ["begin"]).exit_code == EXIT_USAGE
    assert runner.invoke(get_app(), ["no-such-command"]).exit_code == EXIT_USAGE


def test_usage_errors_from_main_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ping", "--port", "not-a-number"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("takler ping: ")
    assert "--help" in err


def test_alter_checks_its_arguments_before_calling_the_server() -> None:
    port = str(closed_port())
    result = runner.invoke(
        get_app(), ["alter", "change", "meter", "/f/t", "m", "lots", "--port", port]
    )
    assert result.exit_code == EXIT_USAGE
    assert "must be an integer" in result.stderr
    result = runner.invoke(get_app(), ["force", "event-set", "/f/t", "--port", port])
    assert result.exit_code == EXIT_USAGE
    assert "PATH:EVENT" in result.stderr


def test_load_of_a_broken_flow_file_is_refused_locally(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def create_flow(:\n")
    result = runner.invoke(get_app(), ["load", str(bad), "--port", str(closed_port())])
    assert result.exit_code == EXIT_REFUSED
    assert "bad.py" in result.stderr and "line 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_with_a_missing_flow_file_fails_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        get_app(), ["serve", str(tmp_path / "missing.py"), "--home", str(tmp_path)]
    )
    assert result.exit_code == EXIT_REFUSED
    assert "no such file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_log_prints_the_tail_of_the_server_log(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "takler.log").write_text("".join(f"line {i}\n" for i in range(30)))
    result = runner.invoke(get_app(), ["log", "--home", str(home), "-n", "3"])
    assert result.exit_code == 0
    assert result.stdout == "line 27\nline 28\nline 29\n"
    missing = runner.invoke(get_app(), ["log", "--home", str(tmp_path / "nowhere")])
    assert missing.exit_code == EXIT_REFUSED and "no log" in missing.stderr


def test_exit_codes_of_remote_errors() -> None:
    from takler.client.client import RemoteError, UnreachableError

    assert exit_code_for(RemoteError("not_found", "no node /x")) == EXIT_REFUSED
    assert exit_code_for(RemoteError("server_error", "boom")) == EXIT_SERVER_ERROR
    assert exit_code_for(UnreachableError("gone")) == EXIT_UNREACHABLE


def test_child_is_dispatched_before_typer_is_imported(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = textwrap.dedent(
        """
        import sys
        from takler_cli.main import main
        rc = main(["child", "complete"])
        heavy = [m for m in ("typer", "rich", "trio") if m in sys.modules]
        print(rc, heavy)
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert out.stdout.strip().endswith("[]"), out.stdout + out.stderr
    rc = int(out.stdout.split()[0])
    assert rc == EXIT_USAGE  # no TAKLER_* environment: a usage error, not a traceback
    assert "Traceback" not in out.stderr


def test_json_output_of_show_lines_helper() -> None:
    from takler_cli.show import show_lines

    data = {
        "kind": "task",
        "name": "t",
        "state": "aborted",
        "tryno": 2,
        "trigger": {"text": "a == complete", "freed": True},
        "events": [{"name": "ev", "number": None, "initial": False, "value": True}],
        "meters": [{"name": "m", "minimum": 0, "maximum": 9, "threshold": None, "value": 4}],
        "labels": [{"name": "l", "default": "", "value": "hi there"}],
        "reason": "exit 2",
        "variables": {
            "X": {"value": 1, "origin": "user", "defined_at": "/f/t"},
            "TAKLER_HOME": {"value": "/h", "origin": "inherited", "defined_at": "/f"},
        },
    }
    text = "\n".join(line.plain for line in show_lines(json.loads(json.dumps(data)), "/f/t"))
    assert "task /f/t" in text and "try 2" in text
    assert "trigger a == complete  (freed)" in text
    assert "event ev  set" in text
    assert "meter m 4 (0..9)" in text
    assert "label l 'hi there'" in text
    assert "reason: exit 2" in text
    assert "var X = 1  (user)" in text
    assert "var TAKLER_HOME = /h  (inherited from /f)" in text
