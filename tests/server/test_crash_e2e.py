"""Crashes, end to end: real ``takler serve`` processes killed with SIGKILL or
SIGTERM at seeded random moments of a 300-task run and started again on the
same home, plus the faults a home can have (damaged store, read-only)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from takler.client.client import RemoteError, open_client
from takler.core import NodeStatus
from takler.core.errors import TaklerError
from takler.server.store import Store

pytestmark = pytest.mark.e2e

TASKS = 300
TRIES = 5
START_LIMIT = 15.0
RUN_LIMIT = 60.0

FLOW_PY = """
from pathlib import Path
from takler.core import Flow

HERE = Path(__file__).parent


def create_flow():
    flow = Flow("crash")
    flow.add_parameter("TAKLER_HOME", str(HERE / "jobs"))
    flow.add_parameter("TAKLER_TRIES", {tries})
    flow.add_parameter("TAKLER_SCRIPT", str(HERE / "job.takler"))
    flow.add_limit("L", 20)
    flow.add_label("ops", "")
    for i in range({families}):
        family = flow.add_family(f"f{{i}}")
        family.add_in_limit("L")
        for j in range(30):
            family.add_task(f"t{{j}}").add_label("info", "")
    return flow
"""

# Each line is written once the server acknowledged what precedes it.
JOB = """{{% include "head.takler" %}}
echo "START $TAKLER_NAME $TAKLER_TRYNO $TAKLER_PASSWORD" >> {log}
takler_label info "$TAKLER_TRYNO-$TAKLER_PASSWORD"
echo "LABEL $TAKLER_NAME $TAKLER_TRYNO $TAKLER_PASSWORD" >> {log}
takler_complete
echo "COMPLETE $TAKLER_NAME $TAKLER_TRYNO $TAKLER_PASSWORD" >> {log}
trap - ERR EXIT INT TERM HUP XCPU
exit 0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_flow(root: Path) -> Path:
    (root / "job.takler").write_text(JOB.format(log=root / "log"))
    flow_file = root / "flow.py"
    flow_file.write_text(FLOW_PY.format(tries=TRIES, families=TASKS // 30))
    return flow_file


def serve_command(flow_file: Path, home: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "takler_cli.main", "serve", str(flow_file),
            "--home", str(home), "--port", str(port), "--begin", *extra]  # fmt: skip


async def wait_serving(port: int, proc: trio.Process) -> None:
    """Wait until the server answers (it binds after restoring, then serves)."""
    with trio.fail_after(START_LIMIT):
        while True:
            assert proc.returncode is None, f"the server exited with {proc.returncode}"
            try:
                async with open_client("127.0.0.1", port, timeout=5) as client:
                    await client.call("ping")
                return
            except (TaklerError, OSError):
                await trio.sleep(0.02)  # another process: nothing to wait on but time


@asynccontextmanager
async def serving(cmd: list[str], port: int, out: Path) -> AsyncIterator[trio.Process]:
    with out.open("ab") as output:
        proc = await trio.lowlevel.open_process(cmd, stdout=output, stderr=subprocess.STDOUT)
    try:
        await wait_serving(port, proc)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


def token_of(home: Path) -> str:
    return str(json.loads((home / "server.json").read_text())["token"])


class Operator:
    """Alters a label over and over, remembering the last value acknowledged."""

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0

    async def run(self, port: int, token: str) -> None:
        try:
            async with open_client("127.0.0.1", port, token=token, timeout=5) as client:
                while True:
                    self.sent += 1
                    await client.call("alter", path="/crash", action="change", kind="label",
                                      name="ops", value=str(self.sent))  # fmt: skip
                    self.acked = self.sent
        except (TaklerError, OSError, trio.BrokenResourceError, trio.TooSlowError):
            return  # the server went away


def read_log(root: Path) -> list[tuple[str, str, int, str]]:
    lines = (root / "log").read_text().splitlines() if (root / "log").exists() else []
    return [
        (kind, path, int(tryno), password) for kind, path, tryno, password in map(str.split, lines)
    ]


def check_run(root: Path, home: Path, operator: Operator) -> None:
    with Store.open(home) as store:
        bunch = store.load()
        history = store.history(limit=10 * TASKS)
    flow = bunch.flows["crash"]
    tasks = {t.node_path: t for t in flow.tasks()}
    assert len(tasks) == TASKS
    not_complete = [p for p, t in tasks.items() if t.status is not NodeStatus.complete]
    assert not not_complete, not_complete[:5]
    assert all(1 <= t.tryno <= TRIES for t in tasks.values())
    # Every acknowledged alter is there: the label holds the last acknowledged
    # value or the one in flight when the server died.
    assert operator.acked <= int(flow.labels["ops"].value or 0) <= operator.sent

    log = read_log(root)
    starts = collections.Counter((path, tryno) for kind, path, tryno, _ in log if kind == "START")
    assert max(starts.values()) == 1, "a try ran twice"
    for kind, path, tryno, password in log:
        task = tasks[path]
        if kind in ("LABEL", "COMPLETE"):
            # Acknowledged: that job's try is the one that counts, and what it set is there.
            assert (tryno, password) == (task.tryno, task.password), (kind, path)
            assert task.labels["info"].value == f"{tryno}-{password}", path
    completes = collections.Counter(path for kind, path, _, _ in log if kind == "COMPLETE")
    assert not completes or max(completes.values()) == 1
    # One history record per job started, each with its end.
    records = collections.Counter((r["path"], r["tryno"]) for r in history)
    assert max(records.values()) == 1
    assert set(starts) <= set(records)
    finals = {(r["path"], r["tryno"]): r for r in history if r["tryno"] == tasks[r["path"]].tryno}
    assert all(r["started_at"] and r["rid"] for r in finals.values())


@pytest.mark.parametrize(
    ("signum", "seed"),
    [(signal.SIGKILL, 1), (signal.SIGKILL, 2), (signal.SIGKILL, 3), (signal.SIGTERM, 4)],
    ids=["kill-1", "kill-2", "kill-3", "term-4"],
)
async def test_crashes_at_random_moments_lose_nothing(
    tmp_path: Path, signum: int, seed: int
) -> None:
    rng = random.Random(seed)
    flow_file, home, port = write_flow(tmp_path), tmp_path / "home", free_port()
    operator = Operator()
    for _ in range(3):
        async with serving(serve_command(flow_file, home, port), port, tmp_path / "out") as proc:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(operator.run, port, token_of(home))
                await trio.sleep(rng.uniform(0.2, 2.0))
                proc.send_signal(signum)
                with trio.fail_after(RUN_LIMIT):
                    await proc.wait()
        assert proc.returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 0)
    final = serve_command(flow_file, home, port, "--until-complete")
    with (tmp_path / "out").open("ab") as output, trio.fail_after(RUN_LIMIT):
        done = await trio.run_process(final, stdout=output, stderr=subprocess.STDOUT, check=False)
    assert done.returncode == 0, (tmp_path / "out").read_text()[-2000:]
    check_run(tmp_path, home, operator)


# ---------------------------------------------------------------- a damaged home

TINY = """
from takler.core import Flow


def create_flow():
    flow = Flow("tiny")
    flow.add_task("t")
    return flow
"""


def tiny_flow(root: Path) -> Path:
    path = root / "tiny.py"
    path.write_text(TINY)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def make_store(root: Path, home: Path) -> None:
    port = free_port()
    async with serving(serve_command(tiny_flow(root), home, port), port, root / "out") as proc:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    assert proc.returncode == 0


@pytest.mark.parametrize("damage", ["junk", "page"])
async def test_a_damaged_store_stops_start_up_with_one_line(tmp_path: Path, damage: str) -> None:
    home = tmp_path / "home"
    if damage == "junk":
        home.mkdir()
        (home / "takler.db").write_bytes(b"a shopping list, not a database\n" * 200)
    else:
        await make_store(tmp_path, home)
        pages = (home / "takler.db").stat().st_size // 4096
        assert pages >= 4 and not (home / "takler.db-wal").exists()
        with (home / "takler.db").open("r+b") as db:
            db.seek(pages // 2 * 4096)  # a page of the tables, past the header and schema
            db.write(os.urandom(4096))
    before = digest(home / "takler.db")
    result = await trio.run_process(
        serve_command(tiny_flow(tmp_path), home, free_port()), capture_stdout=True,
        capture_stderr=True, check=False,
    )  # fmt: skip
    lines = result.stderr.decode().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("takler serve: "), lines
    assert "not a takler store" in lines[0] or "damaged" in lines[0]
    assert "it is left as it is" in lines[0]
    assert digest(home / "takler.db") == before


def read_only_launcher(home: Path) -> list[str] | None:
    """A command prefix that runs the server with ``home`` read-only, or None.

    Root ignores permissions, so it gets a read-only bind mount in a private
    mount namespace; anyone else gets the write bits removed.
    """
    if os.geteuid() != 0:
        home.chmod(0o555)
        (home / "takler.db").chmod(0o444)
        return []
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {home} {home} && mount -o remount,bind,ro {home}"],
        capture_output=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return None
    mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", mount, str(home)]


async def test_a_read_only_home_serves_but_refuses_changes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    await make_store(tmp_path, home)
    before = digest(home / "takler.db")
    prefix = read_only_launcher(home)
    if prefix is None:
        pytest.skip("cannot make a read-only home here")
    port = free_port()
    cmd = prefix + serve_command(tiny_flow(tmp_path), home, port)
    try:
        async with serving(cmd, port, tmp_path / "ro.out") as proc:
            async with open_client("127.0.0.1", port, token=token_of(home)) as client:
                ping = await client.call("ping")
                assert ping["read_only"] and ping["flows"] == 1
                with pytest.raises(RemoteError) as info:
                    await client.call("suspend", path="/tiny/t")
                assert info.value.code == "read_only_store"
                assert "read-only" in info.value.message
                shown: Any = await client.call("show", path="/tiny/t")
                assert shown["suspended"] is False
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(RUN_LIMIT):
                await proc.wait()
        assert proc.returncode == 0, (tmp_path / "ro.out").read_text()[-2000:]
    finally:
        home.chmod(0o755)
    assert digest(home / "takler.db") == before


def takler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "takler_cli.main", *args],
                          capture_output=True, text=True, check=False)  # fmt: skip


async def test_checkpoint_restore_and_history_from_the_command_line(tmp_path: Path) -> None:
    home, flow_file = tmp_path / "home", tiny_flow(tmp_path)
    port = free_port()
    async with serving(serve_command(flow_file, home, port), port, tmp_path / "out") as proc:
        where = ["--home", str(home), "--port", str(port)]
        run = trio.to_thread.run_sync
        with trio.fail_after(START_LIMIT):
            while True:  # the first submission fails (no script) at once
                if json.loads((await run(lambda: takler("history", "--json", *where))).stdout):
                    break
                await trio.sleep(0.05)  # another process: nothing to wait on but time
        assert (await run(lambda: takler("shutdown", *where))).returncode == 0  # then, still
        history = await run(lambda: takler("history", "/tiny/t", "--json", *where))
        saved = await run(lambda: takler("checkpoint", str(tmp_path / "cp.json"), *where))
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    rows = json.loads(history.stdout)
    assert rows[0]["exit"] == "submit_failed" and "script" in rows[0]["reason"]
    assert rows[0]["submitted_at"] and rows[0]["ended_at"]
    assert saved.returncode == 0, saved.stderr
    checkpoint = json.loads((tmp_path / "cp.json").read_text())
    assert checkpoint["flows"][0]["name"] == "tiny"

    other, port = tmp_path / "other", free_port()
    cmd = serve_command(flow_file, other, port, "--restore", str(tmp_path / "cp.json"))
    async with serving(cmd, port, tmp_path / "out") as proc:
        async with open_client("127.0.0.1", port, token=token_of(other)) as client:
            shown = await client.call("show", path="/tiny/t")
            assert (await client.call("ping"))["server_state"] == "shutdown"
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    task = checkpoint["flows"][0]["children"][0]
    assert (shown["status"], shown["tryno"]) == (task["status"], task["tryno"])
