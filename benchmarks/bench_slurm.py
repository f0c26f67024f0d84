"""Trivial tasks through Slurm: takler against sbatch run by hand.

    python -m benchmarks.bench_slurm [--tasks 200] [--poll 5] [--hand-poll 0.5]

Needs a reachable Slurm cluster (``eval "$(scripts/local-slurm.sh start)"``).
Prints, for the same number of trivial jobs:

- by hand: ``sbatch --parsable --wrap true`` submitted one after another,
  then ``squeue`` every ``--hand-poll`` seconds until every job has left the
  queue or shows a final state: the wall time from the first submission;
- takler: a flow of that many tasks (standard head and tail, body ``true``,
  ``TAKLER_RUNNER=slurm``) begun on an in-process server: the wall time until
  the flow is complete, and until the runner has seen every job end;
- the scheduler's polling cost: squeue calls (each covers every watched job),
  their total and mean time, and all the time spent in Slurm commands while
  watching (squeue, sacct, scontrol), with the runner's poll interval.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from takler.core import Flow, NodeStatus
from takler.runners import RunnerSet, SlurmRunner
from takler.runners.slurm import CommandResult, run_command
from takler.server import TaklerServer

_FINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
          "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT"}  # fmt: skip


class TimedSlurm:
    """Runs Slurm's commands and times the squeue calls."""

    def __init__(self) -> None:
        self.squeue_calls = 0
        self.squeue_seconds = 0.0
        self.squeue_max = 0.0

    async def __call__(self, args: Sequence[str]) -> CommandResult:
        start = time.perf_counter()
        try:
            return await run_command(args)
        finally:
            if args[0] == "squeue":
                took = time.perf_counter() - start
                self.squeue_calls += 1
                self.squeue_seconds += took
                self.squeue_max = max(self.squeue_max, took)


def slurm_problem() -> str | None:
    """Why Slurm cannot be used here, or None."""
    for command in ("sbatch", "squeue", "scancel"):
        if shutil.which(command) is None:
            return f"{command} is not on PATH"
    proc = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["squeue failed"])[0]
    return None


def by_hand(tasks: int, poll: float) -> float:
    """Seconds to submit ``tasks`` trivial jobs with sbatch and see them all end."""
    start = time.perf_counter()
    ids = []
    for i in range(tasks):
        out = subprocess.run(
            ["sbatch", "--parsable", f"--job-name=hand.t{i}", "--output=/dev/null", "--wrap", "true"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        ids.append(out.strip().split(";")[0])
    pending = set(ids)
    while pending:
        out = subprocess.run(
            ["squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs=" + ",".join(pending)],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        shown = dict(line.split("|", 1) for line in out.split() if "|" in line)
        pending = {rid for rid in pending if rid in shown and shown[rid] not in _FINAL}
        if pending:
            time.sleep(poll)
    return time.perf_counter() - start


def trivial_flow(tasks: int, home: Path) -> Flow:
    script = home / "trivial.takler"
    script.write_text('{% include "head.takler" %}\ntrue\n{% include "tail.takler" %}\n')
    flow = Flow("slurmbench")
    flow.add_parameter("TAKLER_HOME", home / "jobs")
    flow.add_parameter("TAKLER_RUNNER", "slurm")
    flow.add_parameter("TAKLER_SCRIPT", script)
    flow.add_parameter("TAKLER_TRIES", 1)
    for i in range(tasks):
        flow.add_task(f"t{i}")
    return flow


async def through_takler(tasks: int, poll: float, home: Path) -> dict[str, Any]:
    """Run the flow; returns the wall times and the runner's counters."""
    timed = TimedSlurm()
    runners = RunnerSet.standard(env={}).runners
    runner = runners["slurm"] = SlurmRunner(poll, run=timed)
    server = TaklerServer(port=0, home=home / "server", console=False, runners=runners)
    await server.start()
    flow = trivial_flow(tasks, home)
    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        start = time.perf_counter()
        server.add_flows([flow], begin=True)
        await server.commit()
        ended = (NodeStatus.complete, NodeStatus.aborted)
        with trio.fail_after(max(600.0, tasks * 5.0)):
            while not all(t.status in ended for t in flow.tasks()):
                await server.wait_changed()
            result["complete"] = time.perf_counter() - start
            assert server.jobs is not None
            while True:  # a watch ends after its last commit: nothing to wait on
                if not server.jobs.watches:
                    break
                await trio.sleep(0.05)
            result["watched"] = time.perf_counter() - start
        result["aborted"] = [t.reason for t in flow.tasks() if t.status is NodeStatus.aborted]
        server.stop_now()
    result.update(
        polls=runner.polls,
        poll_seconds=runner.poll_seconds,
        squeue_calls=timed.squeue_calls,
        squeue_seconds=timed.squeue_seconds,
        squeue_max=timed.squeue_max,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--poll", type=float, default=5.0, help="the runner's poll interval (s)")
    parser.add_argument("--hand-poll", type=float, default=0.5, help="squeue interval by hand (s)")
    args = parser.parse_args(argv)
    problem = slurm_problem()
    if problem is not None:
        print(f"no usable Slurm ({problem}); start one with:", file=sys.stderr)
        print('    eval "$(scripts/local-slurm.sh start)"', file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="takler-bench-slurm-") as tmp:
        hand = by_hand(args.tasks, args.hand_poll)
        takler = trio.run(through_takler, args.tasks, args.poll, Path(tmp))
    n = args.tasks
    print(f"{n} trivial jobs through Slurm (runner poll {args.poll:g} s)")
    print(f"  sbatch by hand, waited for:   {hand:7.2f} s")
    print(f"  takler, flow complete:        {takler['complete']:7.2f} s"
          f"  ({takler['complete'] / hand:.2f}x by hand)")  # fmt: skip
    print(f"  takler, every job seen ended: {takler['watched']:7.2f} s")
    calls = takler["squeue_calls"]
    mean = takler["squeue_seconds"] / calls * 1000 if calls else 0.0
    print(f"  squeue calls: {calls} (one per poll: {takler['polls']} polls),"
          f" total {takler['squeue_seconds']:.3f} s, mean {mean:.1f} ms,"
          f" max {takler['squeue_max'] * 1000:.1f} ms")  # fmt: skip
    print(f"  time in Slurm commands while watching: {takler['poll_seconds']:.3f} s")
    if takler["aborted"]:
        print(f"  aborted: {len(takler['aborted'])}, e.g. {takler['aborted'][0]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
