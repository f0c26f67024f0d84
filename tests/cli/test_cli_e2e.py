"""End to end: a real ``takler serve`` process, the command line, and ``takler watch`` in a pty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from takler_cli.main import main

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TAKLER = [sys.executable, "-m", "takler_cli.main"]
#: the live view promises an update on screen within this many seconds
VIEW_BOUND = 0.1


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAKLER_")}
    env["TAKLER_HOME"] = str(home)
    return env


@pytest.fixture
def seed_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, int, subprocess.Popen[bytes]]]:
    """``takler serve test.py --port 0`` on a copy of the seed (jobs land next to the copy)."""
    work = tmp_path / "seed"
    shutil.copytree(EXAMPLES / "seed", work)
    home = tmp_path / "home"
    env = clean_env(home)
    for key in [k for k in os.environ if k.startswith("TAKLER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TAKLER_HOME", str(home))
    log = (tmp_path / "serve.out").open("wb")
    proc = subprocess.Popen(
        [*TAKLER, "serve", str(work / "test.py"), "--port", "0", "--home", str(home)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port = wait_for_server(home, proc, tmp_path / "serve.out")
        yield home, port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def wait_for_server(home: Path, proc: subprocess.Popen[bytes], out: Path) -> int:
    deadline = time.monotonic() + 30
    server_file = home / "server.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"takler serve exited with {proc.returncode}: {out.read_text()}")
        if server_file.is_file():
            try:
                return int(json.loads(server_file.read_text())["port"])
            except (ValueError, KeyError):
                pass
        time.sleep(0.05)
    pytest.fail(f"takler serve did not start: {out.read_text()}")


def show_json(capsys: pytest.CaptureFixture[str], path: str) -> dict:
    capsys.readouterr()
    assert main(["show", path, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def final_state(capsys: pytest.CaptureFixture[str], path: str) -> str | None:
    """The task's state once complete or aborted (polled: the server is another
    process), or its last state after 30 s."""
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline:
        state = show_json(capsys, path)["state"]
        if state in ("complete", "aborted"):
            break
        time.sleep(0.1)
    return state


def test_serve_the_seed_then_begin_runs_t1_to_complete(
    seed_server: tuple[Path, int, subprocess.Popen[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    home, _, proc = seed_server
    assert main(["ping"]) == 0
    assert "1 flows, 1 tasks" in capsys.readouterr().out
    assert show_json(capsys, "/test/t1")["state"] == "unknown"

    assert main(["begin", "test"]) == 0
    assert final_state(capsys, "/test/t1") == "complete"
    output = next((home.parent / "seed" / "test").glob("t1.1"), None)
    assert output is not None and "task1 of /test/t1" in output.read_text()

    assert main(["show", "/test"]) == 0
    shown = capsys.readouterr().out
    assert "flow /test" in shown and "t1" in shown and "complete" in shown
    assert main(["why", "/test/t1"]) == 0
    assert main(["begin", "nosuchflow"]) == 1
    assert "nosuchflow" in capsys.readouterr().err
    assert main(["stop"]) == 0
    assert proc.wait(timeout=15) == 0


def test_alter_adds_and_deletes_attributes_from_the_command_line(
    seed_server: tuple[Path, int, subprocess.Popen[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alter", "add", "meter", "/test/t1", "progress", "0 10 5"]) == 0
    assert main(["alter", "add", "label", "/test/t1", "note", "first run"]) == 0
    assert main(["alter", "add", "event", "/test/t1", "ready"]) == 0
    assert "added event ready on /test/t1" in capsys.readouterr().out
    shown = show_json(capsys, "/test/t1")
    assert shown["meters"] == [
        {"name": "progress", "minimum": 0, "maximum": 10, "threshold": 5, "value": 0}
    ]
    assert [(lb["name"], lb["value"]) for lb in shown["labels"]] == [("note", "first run")]
    assert [(e["name"], e["value"]) for e in shown["events"]] == [("ready", False)]
    assert main(["alter", "add", "meter", "/test/t1", "broken"]) != 0
    assert "MIN MAX" in capsys.readouterr().err
    assert main(["alter", "delete", "meter", "/test/t1", "progress"]) == 0
    assert main(["alter", "delete", "label", "/test/t1", "nothing"]) != 0
    assert "no label nothing" in capsys.readouterr().err
    assert "meters" not in show_json(capsys, "/test/t1")
    assert main(["alter", "change", "repeat", "/test/t1", "5"]) == 1
    assert "/test/t1: no repeat" in capsys.readouterr().err


def test_the_seed_runs_as_written_under_asyncio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python test.py``, unchanged: asyncio.run drives the server (Trio in guest mode)."""
    work = tmp_path / "seed"
    shutil.copytree(EXAMPLES / "seed", work)
    home = tmp_path / "home"
    env = clean_env(home)
    env["TAKLER_PORT"] = "0"
    for key in [k for k in os.environ if k.startswith("TAKLER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TAKLER_HOME", str(home))
    out = tmp_path / "seed.out"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "test.py"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_server(home, proc, out)
            assert main(["begin", "test"]) == 0
            assert final_state(capsys, "/test/t1") == "complete"
            # SIGTERM: an orderly stop, well within two seconds.
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 2.0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = out.read_text()
    assert text.startswith("|- test [unknown]\n  |- t1 [unknown]\n")
    assert "service started" in text


def test_demo_runs_to_completion() -> None:
    env = clean_env(Path("/nonexistent-takler-home"))
    started = time.monotonic()
    out = subprocess.run(
        [*TAKLER, "demo", "--no-view"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "flow demo (7 tasks) complete" in out.stdout
    assert time.monotonic() - started < 60


def read_screen(fd: int, until: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"{until!r} not seen on screen; got {seen[-2000:]!r}")
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.002)
            continue
        except OSError:  # the pty closed
            raise AssertionError(f"{until!r} not seen before the pty closed") from None
        seen += chunk
    return seen


async def force_aborted(port: int) -> float:
    from takler.client.client import open_client
    from takler.client.discover import find_server

    addr = find_server(port=port)
    async with open_client(addr.host, addr.port, token=addr.token) as client:
        await client.call("force", path="/test/t1", state="aborted")
        return time.monotonic()


def test_watch_in_a_pty_shows_a_change_within_the_bound(
    seed_server: tuple[Path, int, subprocess.Popen[bytes]],
) -> None:
    home, port, _ = seed_server
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = clean_env(home) | {"TERM": "xterm-256color"}
    watcher = subprocess.Popen(
        [*TAKLER, "watch", "--home", str(home)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    os.set_blocking(master, False)
    try:
        first = read_screen(master, b"t1", timeout=30)
        assert b"unknown" in first and b"server" in first
        changed_at = trio.run(force_aborted, port)
        # The event pane names the task by path only when it reports its abort.
        read_screen(master, b"/test/t1", timeout=10)
        latency = time.monotonic() - changed_at
        print(f"watch latency: {latency * 1000:.1f} ms")
        assert latency < VIEW_BOUND
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == 0  # Ctrl-C is the normal way out
    finally:
        if watcher.poll() is None:
            watcher.send_signal(signal.SIGINT)
        try:
            watcher.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait()
        os.close(master)
