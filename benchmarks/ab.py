"""Paired runs of one workload on two or more takler checkouts, alternating.

    python -m benchmarks.ab CHECKOUT CHECKOUT... [--workload W] [--reps N] [--quiet-max S]

Each CHECKOUT is a directory holding takler's code (the repository, or a
``git worktree add /tmp/old <commit>`` of another commit); ``PATH:nostore``
runs that checkout without the durable store. Every checkout gets its own
server, started from its own code; the repetitions alternate between them,
the first to go changing each time, under the main harness's protocol (load,
settle, idle gate, begin, wait for complete). Printed: each run, then per
checkout the median server CPU per task and the median of its per-pair ratios
to the first checkout. On a shared machine the figures of separate runs move
by 10-20%; only paired ratios show a change of a few per cent.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import sections
from benchmarks.takler_side import TaklerSide
from benchmarks.workloads import ALL, RUNS


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ab", description=__doc__.split("\n")[0]
    )
    parser.add_argument("checkouts", nargs="+", metavar="CHECKOUT", help="PATH or PATH:nostore")
    parser.add_argument("--workload", default="W-wide-1000-limit20", choices=list(RUNS))
    parser.add_argument("--reps", type=int, default=8, help="runs per checkout (default 8)")
    parser.add_argument(
        "--quiet-max", type=float, default=5.0, help="longest idle-gate wait, s (default 5)"
    )
    return parser.parse_args(argv)


def checkout(spec: str) -> tuple[Path, bool]:
    """``PATH`` or ``PATH:nostore`` as (path, store); exits with a clear line if unusable."""
    path, _, option = spec.partition(":")
    if option not in ("", "nostore"):
        sys.exit(f"benchmarks.ab: {spec}: the only option is ':nostore'")
    root = Path(path).resolve()
    if not (root / "takler" / "server").is_dir() or not (root / "benchmarks").is_dir():
        sys.exit(f"benchmarks.ab: {root} is not a takler checkout (no takler/server, benchmarks)")
    return root, option != "nostore"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    specs = [(spec, *checkout(spec)) for spec in args.checkouts]
    w = ALL[args.workload]
    work = Path(tempfile.mkdtemp(prefix="takler-ab-"))
    sides: list[Any] = []
    try:
        for i, (_, root, store) in enumerate(specs):
            side = TaklerSide(work / f"side{i}", store=store, root=root)
            side.start()
            sides.append(side)
        per_task: list[list[float]] = [[] for _ in specs]
        for rep in range(args.reps):
            k = rep % len(sides)
            for i in [*range(k, len(sides)), *range(k)]:
                res = sections.one_run(sides[i], w, sides, args.quiet_max)
                value = res["server_cpu_s"] / w.tasks * 1e3
                per_task[i].append(value)
                clean = "" if res["clean"] else " (disturbed)"
                print(
                    f"{specs[i][0]}: run {rep + 1}: wall {res['wall_s']:.2f} s, "
                    f"server CPU {value:.2f} ms a task{clean}",
                    flush=True,
                )
        first = per_task[0]
        for (spec, _, _), values in zip(specs, per_task, strict=True):
            ratios = [b / a for a, b in zip(first, values, strict=True)]
            print(
                f"{spec}: median {statistics.median(values):.2f} ms a task "
                f"(runs {min(values):.2f}-{max(values):.2f}); "
                f"paired ratio to the first {statistics.median(ratios):.3f}"
            )
    finally:
        for side in sides:
            side.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
