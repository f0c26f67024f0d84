"""The takler side: a real takler server in a subprocess, driven by the async client.

Run as a module, this is the launcher of that subprocess::

    python -m benchmarks.takler_side --home DIR [--no-store] [--workload NAME]

It builds the workload's flow (if any), starts a :class:`TaklerServer` on
127.0.0.1 (a free port) with it, writes ``<home>/bench-start.json`` (seconds
spent building the flow and starting the server) and serves until stopped.
With ``TAKLER_BENCH_PROFILE=<dir>`` it runs under cProfile and leaves
``<dir>/server-<pid>.prof``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from benchmarks import measure
from benchmarks.workloads import ALL, Workload, install_takler_scripts, store_flow, takler_flow

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
MAX_WAIT = 900.0
T = TypeVar("T")


# ------------------------------------------------------------------ launcher


def serve(home: Path, store: bool, workload: str | None) -> None:
    """Build the flow, start the server, note the times, serve until stopped."""
    from takler.server import TaklerServer
    from takler.server.server import tune_gc

    t0 = time.perf_counter()
    flows = [takler_flow(ALL[workload])] if workload else []
    built = time.perf_counter() - t0
    server = TaklerServer(host=HOST, port=0, home=home, console=False, store=store)

    async def main() -> None:
        t1 = time.perf_counter()
        server.add_flows(flows)
        await server.start()
        tune_gc()  # as takler serve does
        started = time.perf_counter() - t1
        note = {"pid": os.getpid(), "build_s": built, "start_s": started}
        (home / "bench-start.json").write_text(json.dumps(note), encoding="utf-8")
        await server.run()

    profile = os.environ.get("TAKLER_BENCH_PROFILE")
    if not profile:
        trio.run(main)
        return
    import cProfile

    # Where the server's CPU goes (CPU time, not wall): python -m pstats <dir>/server-<pid>.prof
    with cProfile.Profile(time.process_time) as prof:
        try:
            trio.run(main)
        finally:
            prof.dump_stats(Path(profile) / f"server-{os.getpid()}.prof")


# ------------------------------------------------------------------ harness side


class TaklerSide:
    """One takler server (restarted on the same home when asked).

    Args:
        home: the server's home (store, log, jobs); scripts go to ``home/files``.
        store: keep the durable store.
        root: the checkout whose code the server runs (this one by default;
            another worktree for paired comparisons, see ``benchmarks.ab``).
    """

    name = "takler"

    def __init__(self, home: Path, store: bool = True, root: Path = ROOT) -> None:
        self.home = home
        self.store = store
        self.root = root
        self.files = home / "files"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.token: str | None = None
        self.started: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, workload: str | None = None, tasks: int | None = None) -> float:
        """Start the server; returns seconds until it answered ping (with ``tasks`` tasks)."""
        self.home.mkdir(parents=True, exist_ok=True)
        for name in ("server.json", "bench-start.json"):
            (self.home / name).unlink(missing_ok=True)
        command = [sys.executable, "-m", "benchmarks.takler_side", "--home", str(self.home)]
        if not self.store:
            command.append("--no-store")
        if workload:
            command += ["--workload", workload]
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(self.root), os.environ.get("PYTHONPATH", "")]),
        )
        out = open(self.home / "server.stdout", "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            command,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        measure.KEEP[self.proc.pid] = self.proc
        self._wait_up(tasks, timeout=600.0)
        up = time.monotonic() - t0
        self.started = json.loads((self.home / "bench-start.json").read_text(encoding="utf-8"))
        return up

    def _wait_up(self, tasks: int | None, timeout: float) -> None:
        from takler.core.errors import TaklerError

        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.005) + 1):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"takler server exited rc={self.proc.returncode}; see {self.home}"
                )
            if self._read_address():
                try:
                    reply = self.call("ping")
                    if tasks is None or reply["tasks"] == tasks:
                        return
                except (TaklerError, OSError):
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        raise RuntimeError(f"takler server did not answer within {timeout} s; see {self.home}")

    def _read_address(self) -> bool:
        try:
            data = json.loads((self.home / "server.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if self.proc is None or data.get("pid") != self.proc.pid:
            return False
        self.port, self.token = int(data["port"]), data.get("token")
        return True

    def stop(self) -> None:
        """Stop the server (``stop`` command, then signals to our pid only)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        measure.KEEP.pop(proc.pid, None)

    close = stop

    # -------------------------------------------------------------- client

    def session(self, fn: Callable[[Any], Awaitable[T]], timeout: float = 60.0) -> T:
        """Run ``await fn(client)`` on a fresh connection."""
        from takler.client.client import open_client

        async def main() -> T:
            async with open_client(HOST, self.port, token=self.token, timeout=timeout) as client:
                return await fn(client)

        return trio.run(main)

    def call(self, command: str, **args: Any) -> Any:
        return self.session(lambda client: client.call(command, **args))

    # -------------------------------------------------------------- workloads

    def prepare(self, w: Workload) -> None:
        """Install the scripts and load the flow (not timed)."""
        from takler.codec import dump_node

        install_takler_scripts(w, self.files)
        data = dump_node(takler_flow(w, self.files), state=False)
        self.call("load", flows=[data])

    def run(self, w: Workload, before: Callable[[], None]) -> dict[str, Any]:
        """Begin the flow; wall time until a subscription shows it complete."""
        from takler.protocol import Closed, Delta

        path = f"/{w.flow}"

        async def go(client: Any) -> dict[str, Any]:
            state, deltas = None, 0
            async with client.subscribe(path) as sub:
                await sub.__anext__()  # the snapshot
                before()
                t0 = time.monotonic()
                await client.call("begin", path=path)
                begun = time.monotonic() - t0
                with trio.move_on_after(MAX_WAIT):
                    while state != "complete":
                        # A task that aborts may retry: give up only on a quiet abort.
                        with trio.move_on_after(30.0 if state == "aborted" else MAX_WAIT) as idle:
                            message = await sub.__anext__()
                        if idle.cancelled_caught:
                            break
                        if isinstance(message, Closed):
                            raise RuntimeError(f"subscription closed: {message.reason}")
                        if isinstance(message, Delta):
                            deltas += 1
                            for change in message.changes:
                                if change["path"] == path and change["kind"] == "status":
                                    state = change["new"]
                wall = time.monotonic() - t0
            return {
                "wall_s": wall,
                "begin_s": begun,
                "state": state,
                "deltas": deltas,
                "completed": state == "complete",
            }

        return self.session(go, timeout=MAX_WAIT)

    def count_complete(self, w: Workload) -> int:
        data = self.call("show", path=f"/{w.flow}")
        return sum(
            1 for node in _walk(data) if node["kind"] == "task" and node.get("status") == "complete"
        )

    def delete(self, w: Workload) -> None:
        self.call("delete", path=f"/{w.flow}", force=True)

    def job_folder(self, w: Workload) -> str:
        return str(self.home / w.flow)

    # -------------------------------------------------------------- latency

    def ping_n(self, n: int) -> list[float]:
        return self.session(lambda client: _timed(lambda: client.call("ping"), n))

    def full_state_n(self, n: int) -> list[float]:
        return self.session(lambda client: _timed(lambda: client.call("show"), n), timeout=300.0)

    def active_task(self) -> dict[str, str]:
        """Start a task whose job sleeps (until :meth:`end_active_task`); returns
        the environment of a job of it."""
        from takler.codec import dump_node
        from takler.core.node import Flow

        flow = Flow("latency")
        flow.add_parameter("TAKLER_FILES", str(self.files))
        flow.add_parameter("TAKLER_TIMEOUT", 10)
        # Killed at the end: no second try may outlive the server.
        flow.add_parameter("TAKLER_TRIES", 1)
        flow.add_family("f").add_task("t").add_label("info", "")
        script = self.files / "latency" / "f" / "t.takler"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text('{% include "head.takler" %}\nsleep 3600\n{% include "tail.takler" %}\n')
        self.call("load", flows=[dump_node(flow, state=False)], replace=True)
        self.call("begin", path="/latency")
        for _ in range(1000):
            task = self.call("show", path="/latency/f/t")
            if task.get("status") == "active":
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("the latency task did not become active")
        secret = next(
            n for n in _walk(self.call("checkpoint")) if n.get("name") == "t" and "password" in n
        )
        return {
            "TAKLER_HOST": HOST,
            "TAKLER_PORT": str(self.port),
            "TAKLER_NAME": "/latency/f/t",
            "TAKLER_PASSWORD": secret["password"],
            "TAKLER_TRYNO": str(secret["tryno"]),
            "TAKLER_TIMEOUT": "10",
            "ECF_HOST": HOST,
            "ECF_PORT": str(self.port),
        }

    def end_active_task(self) -> None:
        """Kill the sleeping job; returns once the task is aborted (bounded)."""
        self.call("kill", path="/latency")
        for _ in range(500):
            if self.call("show", path="/latency/f/t").get("status") == "aborted":
                return
            time.sleep(0.01)

    # -------------------------------------------------------------- scale

    def load(self, w: Workload) -> float:
        """Seconds for the ``load`` command of the flow's definition data."""
        from takler.codec import dump_node

        data = dump_node(takler_flow(w), state=False)

        async def go(client: Any) -> float:
            t0 = time.perf_counter()
            await client.call("load", flows=[data])
            return time.perf_counter() - t0

        return self.session(go, timeout=600.0)

    def checkpoint(self) -> tuple[float, int]:
        """Seconds for the ``checkpoint`` command, and the size of its JSON."""

        async def go(client: Any) -> tuple[float, int]:
            t0 = time.perf_counter()
            data = await client.call("checkpoint")
            return time.perf_counter() - t0, len(json.dumps(data))

        return self.session(go, timeout=600.0)

    def store_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.home.glob("*.db*"))

    def restore(self, w: Workload) -> float:
        """Stop, start again on the same home: seconds until ping shows the flow."""
        self.stop()
        return self.start(tasks=w.tasks)

    def commands_per_second(self, clients: int, per_client: int) -> float:
        """``alter`` of a label from ``clients`` connections at once."""
        from takler.client.client import open_client
        from takler.codec import dump_node

        self.call("load", flows=[dump_node(store_flow(), state=False)], replace=True)

        async def one(k: int) -> None:
            async with open_client(HOST, self.port, token=self.token, timeout=60.0) as client:
                path = f"/storebench/f/t{k % 10}"
                for i in range(per_client):
                    await client.call(
                        "alter", path=path, action="change", kind="label", name="info", value=str(i)
                    )

        async def main() -> float:
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for k in range(clients):
                    nursery.start_soon(one, k)
            return clients * per_client / (time.perf_counter() - t0)

        return trio.run(main)


async def _timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    await fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def _walk(data: dict[str, Any]) -> list[dict[str, Any]]:
    out, todo = [], list(data.get("flows", [])) or [data]
    while todo:
        node = todo.pop()
        out.append(node)
        todo += node.get("children", [])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.takler_side")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--no-store", dest="store", action="store_false")
    parser.add_argument("--workload", choices=sorted(ALL))
    args = parser.parse_args(argv)
    serve(args.home, args.store, args.workload)


if __name__ == "__main__":
    main()
