"""The model alone: build, memory, codec, and the cost of acting on one change.

    python -m benchmarks.bench_model [--quick] [--samples N]

Flows of 1,000, 10,000 and 100,000 tasks (``--quick``: 1,000 and 10,000), the
scale shape of the standard workloads: families ``f<k>`` of 100 tasks
``t0..t99``, each with a variable ``V=j`` and a trigger on a sibling
(``t{j-1} == complete``; ``t1 != aborted`` for ``t0``). Printed per size:

- build: building the flow, attaching it to a bunch (path and dependency
  indexes) and draining the journal, as the server does on load;
- memory per task: what tracemalloc counts for the whole bunch, divided by
  the number of tasks (a separate build: tracing slows building down);
- codec: ``dump_bunch`` (model to plain data) and ``load_bunch`` (back), and
  the JSON text's size;
- one change: from a task's ``ops.complete`` to having every dependent of
  every change found (``bunch.dependents``) and checked (``task_ready``):
  the median over many samples, the sizes interleaved so that a busy
  machine slows them alike. The ratio between the largest and the smallest
  flow is the figure: the cost of a change must not grow with the flow
  (aim: below 1.5).

For reference, ecFlow loads a 262,000-task definition in 3.6 s and
checkpoints it in 0.7 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from takler.core import Bunch, Flow, Task, ops
from takler.core.bunch import gc_paused
from takler.core.ready import task_ready

NOW = dt.datetime(2024, 5, 1, 9, 0)
FAMILY_SIZE = 100


def build_flow(tasks: int) -> Flow:
    """The scale shape with ``tasks`` tasks (a multiple of 100)."""
    flow = Flow(f"scale{tasks}")
    for k in range(tasks // FAMILY_SIZE):
        family = flow.add_family(f"f{k}")
        for j in range(FAMILY_SIZE):
            task = family.add_task(f"t{j}")
            task.add_parameter("V", j)
            task.add_trigger("t1 != aborted" if j == 0 else f"t{j - 1} == complete")
    return flow


def build_bunch(tasks: int) -> Bunch:
    bunch = Bunch(now=NOW)
    bunch.add_flow(build_flow(tasks))
    bunch.drain()
    return bunch


#: time without the cyclic GC, as timeit does: its passes land on random samples
no_gc = gc_paused


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The median wall time of ``fn`` over ``repeat`` calls, and its last result."""
    times = []
    result = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def memory_per_task(tasks: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        bunch = build_bunch(tasks)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del bunch
    return used / tasks


def codec_figures(bunch: Bunch, repeat: int) -> dict[str, float]:
    from takler.codec import dump_bunch, dumps, load_bunch

    with no_gc():
        dump_s, data = timed(lambda: dump_bunch(bunch), repeat)
        load_s, _ = timed(lambda: load_bunch(data), repeat)
    return {"dump_s": dump_s, "load_s": load_s, "json_mb": len(dumps(data)) / 1e6}


class ChangeProbe:
    """Completes queued tasks of a begun flow one at a time and times the follow-up."""

    def __init__(self, bunch: Bunch, seed: int) -> None:
        self.bunch = bunch
        self.tasks = list(bunch.tasks())
        random.Random(seed).shuffle(self.tasks)
        self.next = 0
        self.samples: list[float] = []
        self.checked = 0

    def _pick(self) -> Task:
        while True:
            task = self.tasks[self.next % len(self.tasks)]
            self.next += 1
            if self.next % len(self.tasks) == 0:
                ops.begin(task.flow, NOW, force=True)  # every task ran: start over
            if task.status.value == "queued":
                return task

    def sample(self) -> None:
        task = self._pick()
        ops.start_submission(task, "pw", NOW)
        ops.init(task, NOW)
        bunch = self.bunch
        start = time.perf_counter()
        changes = ops.complete(task, NOW)
        ready = 0
        for change in changes:
            for node in bunch.dependents(change):
                if isinstance(node, Task) and task_ready(node, NOW):
                    ready += 1
        self.samples.append(time.perf_counter() - start)
        self.checked += ready
        bunch.drain()


def change_costs(sizes: list[int], samples: int) -> dict[int, float]:
    probes = {}
    for n in sizes:
        bunch = build_bunch(n)
        flow = next(iter(bunch.flows.values()))
        ops.begin(flow, NOW)
        bunch.drain()
        probes[n] = ChangeProbe(bunch, seed=n)
    rounds = 20
    with no_gc():
        for _ in range(rounds):
            for probe in probes.values():
                for _ in range(samples // rounds):
                    probe.sample()
    return {n: statistics.median(p.samples) for n, p in probes.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k tasks only")
    parser.add_argument("--samples", type=int, default=4000, help="changes timed per size")
    args = parser.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    samples = min(args.samples, 1000) if args.quick else args.samples

    print(f"{'tasks':>8} {'build s':>8} {'B/task':>7} {'dump s':>7} {'load s':>7} {'JSON MB':>8}")
    for n in sizes:
        repeat = 1 if n >= 100_000 else 3
        build_s, bunch = timed(functools.partial(build_bunch, n), repeat)
        per_task = memory_per_task(n)
        codec = codec_figures(bunch, repeat)
        print(
            f"{n:>8} {build_s:>8.3f} {per_task:>7.0f} {codec['dump_s']:>7.3f}"
            f" {codec['load_s']:>7.3f} {codec['json_mb']:>8.2f}"
        )
        del bunch

    costs = change_costs(sizes, samples)
    print()
    print(f"one change (complete + dependents + task_ready), median of {samples}:")
    for n, cost in costs.items():
        print(f"{n:>8} tasks: {cost * 1e6:7.1f} us")
    small, large = sizes[0], sizes[-1]
    ratio = costs[large] / costs[small]
    print(f"ratio {large // 1000}k / {small // 1000}k: {ratio:.2f} (aim: below 1.5)")
    print()
    print("reference: ecFlow loads 262,000 tasks in 3.6 s and checkpoints them in 0.7 s")


if __name__ == "__main__":
    main()
