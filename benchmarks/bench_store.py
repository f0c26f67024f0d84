"""The durable store: what it costs commands, how long it blocks, how fast a restart is.

    python -m benchmarks.bench_store [--quick]

Printed:

- commands/s with the store on and off: an in-process server and async
  client(s) on loopback; 500 sequential ``alter`` label commands from one
  client, then 500 from 10 concurrent clients (50 each). Each command is
  acknowledged only once durable (SQLite WAL, ``synchronous=FULL``); the
  concurrent clients share fsyncs through the group commit;
- the longest blocking calls in the Trio thread during those commands: the
  longest ``Store.prepare`` (taking the touched rows from the model) and the
  longest single task step of any task (what a stalled event loop would show);
- restart of a 100,000-task flow (``--quick``: 10,000): from constructing the
  server on the existing home to its first ``ping`` answer; the flow is begun,
  each family's tasks chained by triggers, all held by a limit of 0, so the
  first scheduler pass after the restart evaluates every task. Also the
  store's ``load`` alone, and the ``prepare`` of the whole flow when it was
  first added (the one store call whose cost grows with a flow's size).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from takler.client.client import open_client
from takler.core import Flow
from takler.server import TaklerServer
from takler.server.store import Store

SEQUENTIAL = 500
CLIENTS = 10
FAMILY_SIZE = 100


class LongestStep(trio.abc.Instrument):
    """The longest single task step: how long the event loop was held at once."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started: float | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._started is not None:  # None: the step that added the instrument
            self.longest = max(self.longest, time.perf_counter() - self._started)
            self._started = None


def time_calls(obj: Any, name: str, durations: list[float]) -> None:
    """Record the duration of every call of ``obj.name`` in ``durations``."""
    method: Callable[..., Any] = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - started)

    setattr(obj, name, timed)


def label_flow() -> Flow:
    flow = Flow("bench")
    flow.add_label("l", "")
    return flow


async def commands_per_second(home: Path, store: bool) -> dict[str, float]:
    server = TaklerServer(port=0, home=home, console=False, store=store, log_level="WARNING")
    server.add_flows([label_flow()])
    await server.start()
    prepares: list[float] = []
    writes: list[float] = []
    if server.store is not None:
        time_calls(server.store, "prepare", prepares)
        time_calls(server.store, "write", writes)
    steps = LongestStep()
    figures: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        trio.lowlevel.add_instrument(steps)
        async with open_client("127.0.0.1", server.port, token=server.token) as client:
            started = time.perf_counter()
            for i in range(SEQUENTIAL):
                await client.call("alter", path="/bench", action="change", kind="label",
                                  name="l", value=str(i))  # fmt: skip
            figures["sequential"] = SEQUENTIAL / (time.perf_counter() - started)

        async def one_client(n: int) -> None:
            async with open_client("127.0.0.1", server.port, token=server.token) as client:
                for i in range(SEQUENTIAL // CLIENTS):
                    await client.call("alter", path="/bench", action="change", kind="label",
                                      name="l", value=f"{n}.{i}")  # fmt: skip

        started = time.perf_counter()
        before = len(writes)
        async with trio.open_nursery() as clients:
            for n in range(CLIENTS):
                clients.start_soon(one_client, n)
        figures["concurrent"] = SEQUENTIAL / (time.perf_counter() - started)
        figures["per_write"] = SEQUENTIAL / max(1, len(writes) - before)
        figures["write_ms"] = 1e3 * sum(writes) / max(1, len(writes))
        trio.lowlevel.remove_instrument(steps)
        server.stop_now()
    figures["prepare_ms"] = max(prepares, default=0.0) * 1e3
    figures["step_ms"] = steps.longest * 1e3
    return figures


def big_flow(tasks: int) -> Flow:
    flow = Flow("big")
    flow.add_limit("L", 0)  # nothing is submitted: the restart measures the server alone
    for k in range(tasks // FAMILY_SIZE):
        family = flow.add_family(f"f{k}")
        family.add_in_limit("L")
        for j in range(FAMILY_SIZE):
            task = family.add_task(f"t{j}")
            task.add_trigger("t1 != aborted" if j == 0 else f"t{j - 1} == complete")
    return flow


async def first_start(home: Path, tasks: int) -> float:
    """Start a server on a new home with the flow begun; returns the longest prepare (s)."""
    server = TaklerServer(port=0, home=home, console=False, log_level="WARNING")
    await server.start()
    prepares: list[float] = []
    time_calls(server.store, "prepare", prepares)
    server.add_flows([big_flow(tasks)], begin=True)
    await server.commit()
    await server.aclose()
    return max(prepares)


async def restart(home: Path) -> tuple[float, float]:
    """Seconds until the first ping answers, and the longest task step until then."""
    steps = LongestStep()
    trio.lowlevel.add_instrument(steps)
    started = time.perf_counter()
    server = TaklerServer(port=0, home=home, console=False, log_level="WARNING")
    async with trio.open_nursery() as nursery:
        await server.start()
        nursery.start_soon(server.run)
        async with open_client("127.0.0.1", server.port, token=server.token, timeout=600) as client:
            await client.call("ping")
        elapsed = time.perf_counter() - started
        trio.lowlevel.remove_instrument(steps)
        server.stop_now()
    return elapsed, steps.longest


def load_seconds(home: Path) -> float:
    started = time.perf_counter()
    with Store.open(home) as store:
        store.load()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 10,000-task restart")
    args = parser.parse_args(argv)
    tasks = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="takler-bench-store-") as tmp:
        root = Path(tmp)
        on = trio.run(commands_per_second, root / "on", True)
        off = trio.run(commands_per_second, root / "off", False)
        print(f"{'alter commands/s':<28} {'store on':>9} {'store off':>9} {'on/off':>7}")
        for key, what in (
            ("sequential", "1 client, sequential"),
            ("concurrent", f"{CLIENTS} clients"),
        ):
            print(f"{what:<28} {on[key]:>9.0f} {off[key]:>9.0f} {on[key] / off[key]:>7.2f}")
        print(f"group commit: {on['per_write']:.1f} commands per transaction with {CLIENTS} clients;"
              f" a transaction takes {on['write_ms']:.2f} ms (worker thread, fsync included)")  # fmt: skip
        print(
            f"longest Store.prepare:   {on['prepare_ms']:7.2f} ms (per command, in the Trio thread)"
        )
        print(
            f"longest task step:       {on['step_ms']:7.2f} ms store on, {off['step_ms']:.2f} ms off"
        )
        print()
        home = root / "big"
        whole = trio.run(first_start, home, tasks)
        load = load_seconds(home)
        elapsed, step = trio.run(restart, home)
        print(f"{tasks:,}-task flow (begun, every task evaluated at restart):")
        print(f"  restart until ping answers: {elapsed:7.2f} s")
        print(f"  of which Store.load:        {load:7.2f} s (in a worker thread)")
        print(f"  longest task step:          {step:7.2f} s (the first scheduler pass, all tasks)")
        print(f"  prepare of the whole flow:  {whole:7.2f} s (when it was added or begun)")
        print(f"  store size:                 {(home / 'takler.db').stat().st_size / 1e6:7.1f} MB")
        print(f"  ({dt.datetime.now():%Y-%m-%d %H:%M})")


if __name__ == "__main__":
    main()
