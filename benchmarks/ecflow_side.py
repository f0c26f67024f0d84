"""The ecFlow side: an ``ecflow_server`` of our own on 127.0.0.1, driven by
:mod:`benchmarks.ecflow_agent` under Debian's ``/usr/bin/python3``."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import measure
from benchmarks.workloads import (
    Workload,
    install_ecflow_scripts,
    store_ecflow_def,
    write_ecflow_def,
)

HOST = "127.0.0.1"
SYSTEM_PYTHON = "/usr/bin/python3"
AGENT = Path(__file__).resolve().with_name("ecflow_agent.py")


def missing() -> str | None:
    """Why ecFlow cannot be measured here, or None when it can."""
    for program in ("ecflow_server", "ecflow_client"):
        if shutil.which(program) is None:
            return f"{program} not found"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    check = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import ecflow"], capture_output=True, timeout=60, check=False
    )
    if check.returncode != 0:
        return f"the ecflow Python module is missing for {SYSTEM_PYTHON}"
    return None


def version() -> str:
    out = subprocess.run(
        ["ecflow_server", "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "ecFlow"


class EcflowSide:
    """One ecflow_server (restarted on the same home and port when asked).

    Args:
        home: its ECF_HOME (scripts, jobs, checkpoint, log).
    """

    name = "ecFlow"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = measure.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.defs = home / "defs"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -------------------------------------------------------------- lifecycle

    def start(self, clean: bool = True, suite: str | None = None) -> float:
        """Start the server; returns seconds until it answered (holding ``suite``)."""
        self.home.mkdir(parents=True, exist_ok=True)
        if clean:
            for path in self.home.iterdir():
                if ".ecf." in path.name:
                    path.unlink()
        env = dict(os.environ, ECF_HOME=str(self.home), ECF_PORT=str(self.port))
        out = open(self.home / "server.stdout", "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            ["ecflow_server", f"--port={self.port}"],
            cwd=self.home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        measure.KEEP[self.proc.pid] = self.proc
        if self.agent is None:
            self.agent = subprocess.Popen(
                [SYSTEM_PYTHON, str(AGENT), HOST, str(self.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            measure.KEEP[self.agent.pid] = self.agent
        self.call("wait_up", suite=suite)
        up = time.monotonic() - t0
        # A new server starts halted; ecflow_start.sh restarts it too.
        self.call("restart")
        return up

    def stop(self) -> None:
        """Halt and terminate the server (our pid only, signals as a fallback)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self.call("stop", timeout=30)
            except RuntimeError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        measure.KEEP.pop(proc.pid, None)

    def close(self) -> None:
        self.stop()
        agent, self.agent = self.agent, None
        if agent is not None:
            assert agent.stdin is not None
            agent.stdin.close()
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(timeout=10)
            measure.KEEP.pop(agent.pid, None)

    def call(self, op: str, timeout: float = 900.0, **args: Any) -> Any:
        """One request to the agent; raises RuntimeError with ecFlow's message."""
        agent = self.agent
        assert agent is not None and agent.stdin is not None and agent.stdout is not None
        agent.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        agent.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(agent.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"ecFlow agent: no answer to {op} within {timeout} s")
        line = agent.stdout.readline()
        if not line:
            raise RuntimeError(f"ecFlow agent exited (rc {agent.poll()}) during {op}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"ecFlow {op}: {reply['error']}")
        return reply["result"]

    # -------------------------------------------------------------- workloads

    def prepare(self, w: Workload) -> None:
        """Install the scripts and load the suite (not timed)."""
        include = install_ecflow_scripts(w, self.home)
        self.call("load", path=str(write_ecflow_def(w, self.defs, include)))

    def run(self, w: Workload, before: Callable[[], None]) -> dict[str, Any]:
        """Begin the suite; wall time until a poll reads it complete."""
        before()
        res = self.call("run", suite=w.flow, poll=w.poll, limit=w.limit is not None)
        res["completed"] = res["state"] == "complete"
        return dict(res)

    def count_complete(self, w: Workload) -> int:
        return int(self.call("count_complete", suite=w.flow))

    def delete(self, w: Workload) -> None:
        self.call("delete", suite=w.flow)

    def job_folder(self, w: Workload) -> str:
        return str(self.home / w.flow)

    # -------------------------------------------------------------- latency

    def ping_n(self, n: int) -> list[float]:
        return list(self.call("ping_n", n=n))

    def full_state_n(self, n: int) -> list[float]:
        return list(self.call("get_defs_n", n=n))

    def commands_per_second(self, n: int) -> float:
        """``alter`` of a label, ``n`` in a row from one client."""
        self.defs.mkdir(parents=True, exist_ok=True)
        path = self.defs / "storebench.def"
        path.write_text(store_ecflow_def(), encoding="utf-8")
        self.call("load", path=str(path))
        return n / float(self.call("alter_label_n", path="/storebench/f/t0", n=n))

    # -------------------------------------------------------------- scale

    def load(self, w: Workload) -> float:
        path = write_ecflow_def(w, self.defs)
        return float(self.call("load", path=str(path)))

    def checkpoint(self) -> tuple[float, int]:
        """Seconds for ``checkpt``, and the checkpoint file's size."""
        seconds = float(self.call("check_pt"))
        files = list(self.home.glob("*.ecf.check"))
        return seconds, files[0].stat().st_size if files else 0

    def restore(self, w: Workload) -> float:
        """Checkpoint, stop, start again: seconds until it answers with the suite."""
        self.call("check_pt")
        self.stop()
        return self.start(clean=False, suite=w.flow)
