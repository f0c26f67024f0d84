"""The benchmark harness: standard workloads on takler, and on ecFlow when installed.

    python -m benchmarks [--quick] [--only NAME...] [--no-ecflow] [--json FILE]

NAME is a workload (W-wide-200, W-wide-1000-limit20, W-chain-100, scale-10k,
scale-100k) or a section (latency, store). Prints a markdown report: the
machine, takler/ecFlow ratios against the targets, then the medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import ecflow_side, measure, report, sections
from benchmarks.takler_side import TaklerSide
from benchmarks.workloads import RUNS, SCALES

NAMES = [*RUNS, "latency", *SCALES, "store"]
QUICK = ["W-wide-200", "latency", "scale-10k", "store"]


def log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, file=sys.stderr, flush=True)


def factory(name: str, home: Path) -> Any:
    if name == "takler":
        return TaklerSide(home)
    return ecflow_side.EcflowSide(home)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"one repetition, 10 calls a block, short idle gate; only {', '.join(QUICK)}",
    )
    parser.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=" ".join(NAMES))
    parser.add_argument("--no-ecflow", action="store_true", help="measure takler alone")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    parser.add_argument("--calls", type=int, help="timed calls per latency block (default 50)")
    parser.add_argument(
        "--quiet-max",
        type=float,
        help="longest wait for an idle machine before a measurement, s (default 60)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the servers' homes")
    return parser.parse_args(argv)


def run_section(
    name: str, where: Path, sides: list[str], settings: sections.Settings, results: dict[str, Any]
) -> None:
    if name in RUNS:
        runs = sections.runs(factory, sides, RUNS[name], where, settings, log)
        results.setdefault("runs", {})[name] = runs
    elif name in SCALES:
        scale = sections.scale(factory, sides, SCALES[name], where, settings, log)
        results.setdefault("scale", {})[name] = scale
    elif name == "latency":
        results["latency"] = sections.latency(factory, sides, where, settings, log)
    elif name == "store":
        results["store"] = sections.store(factory, sides, where, settings, log)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings = sections.Settings(
        reps=args.reps or (1 if args.quick else 3),
        calls=args.calls or (10 if args.quick else 50),
        quiet_max=args.quiet_max if args.quiet_max is not None else (10.0 if args.quick else 60.0),
        retries=0 if args.quick else 1,
    )
    names = args.only or (QUICK if args.quick else NAMES)
    missing = "--no-ecflow given" if args.no_ecflow else ecflow_side.missing()
    sides = ["takler"] if missing else ["takler", "ecFlow"]
    if missing:
        log(f"ecFlow not measured: {missing}; takler's figures alone")
    import takler

    results: dict[str, Any] = {
        "machine": measure.machine(),
        "takler_version": takler.__version__,
        "ecflow": not missing,
        "ecflow_missing": missing,
        "settings": {
            "reps": settings.reps,
            "calls": settings.calls,
            "quiet_max_s": settings.quiet_max,
            "sections": names,
        },
    }
    if not missing:
        results["machine"]["ecflow"] = ecflow_side.version()
    measure.become_subreaper()
    home = Path(tempfile.mkdtemp(prefix="takler-bench-"))
    log(f"working in {home}")
    try:
        for name in names:
            log(f"== {name}")
            try:
                run_section(name, home / name, sides, settings, results)
            except Exception as e:  # one broken section must not lose the others
                log(f"{name} failed: {type(e).__name__}: {e}")
                results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
    finally:
        measure.reap()
        if args.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    print(report.render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
