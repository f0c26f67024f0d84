"""How fast the live view stays on a 10,000-task flow.

Prints the time to apply a snapshot, to apply deltas, and to draw one frame
(choosing rows and rendering them with rich, as ``takler watch`` does) for a
quiet, a busy and a finished flow. A frame must fit well inside the 50 ms
throttle of the live loop for updates to reach the screen within 100 ms.

    python benchmarks/bench_view.py [--tasks 10000] [--height 50]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from typing import Any

from rich.console import Console

from takler_cli.view import render
from takler_cli.viewmodel import ViewModel


def flow_dump(tasks: int, per_family: int = 100) -> dict[str, Any]:
    families = []
    for i in range(max(tasks // per_family, 1)):
        children = [
            {"kind": "task", "name": f"t{j}", "state": "queued", "tryno": 0}
            for j in range(per_family)
        ]
        families.append(
            {"kind": "family", "name": f"f{i}", "state": "queued", "children": children}
        )
    flow = {"kind": "flow", "name": "big", "state": "queued", "children": families}
    return {
        "schema": 1,
        "now": "2024-01-01T00:00:00",
        "flows": [flow],
        "server": {"state": "running"},
    }


def frame_ms(model: ViewModel, console: Console, height: int, repeat: int = 20) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        console.print(render(model, time.time(), height=height, title="bench"))
        times.append((time.perf_counter() - start) * 1000)
        console.file.seek(0)
        console.file.truncate()
    return statistics.median(times)


def set_states(model: ViewModel, every: int, state: str) -> int:
    changed = 0
    tasks = [(path, node) for path, node in model.nodes.items() if node.is_task]
    for i, (path, node) in enumerate(tasks):
        if i % every == 0:
            model.apply_change(
                {"path": path, "kind": "status", "old": node.state, "new": state}, time.time()
            )
            changed += 1
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--height", type=int, default=50)
    args = parser.parse_args()
    console = Console(file=io.StringIO(), width=140, height=args.height, color_system="truecolor")
    data = flow_dump(args.tasks)

    model = ViewModel()
    start = time.perf_counter()
    model.apply_snapshot(data, time.time())
    print(
        f"snapshot of {model.task_count()} tasks applied in {(time.perf_counter() - start) * 1000:.1f} ms"
    )
    print(f"frame, all queued:          {frame_ms(model, console, args.height):6.2f} ms")

    start = time.perf_counter()
    changed = set_states(model, 20, "active") + set_states(model, 51, "aborted")
    per_change = (time.perf_counter() - start) / max(changed, 1) * 1e6
    print(f"{changed} deltas applied at {per_change:.1f} us each")
    print(f"frame, busy (5% active, 2% aborted): {frame_ms(model, console, args.height):6.2f} ms")

    for node in list(model.nodes.values()):
        if node.is_task and node.state != "complete":
            model.apply_change(
                {"path": node.path, "kind": "status", "old": node.state, "new": "complete"}, 0.0
            )
    print(f"frame, all complete:        {frame_ms(model, console, args.height):6.2f} ms")


if __name__ == "__main__":
    main()
