"""The benchmark sections: workload runs, latency, scale, store on/off.

Each takes the sides to measure (takler first, ecFlow when installed) and
returns plain data; :mod:`benchmarks.report` turns it into tables. Sides
alternate: the one that goes first changes from one repetition to the next.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from benchmarks import measure
from benchmarks.workloads import ALL, RUNS, Workload


@attrs.frozen
class Settings:
    """How much to measure: repetitions, calls per latency block, the idle gate."""

    reps: int = 3
    calls: int = 50
    quiet_max: float = 60.0
    retries: int = 1


SideFactory = Callable[[str, Path], Any]


@contextmanager
def opened(factory: SideFactory, names: Sequence[str], home: Path) -> Iterator[list[Any]]:
    """Sides built by ``factory(name, home/name)``, closed on exit."""
    with ExitStack() as stack:
        sides = []
        for name in names:
            side = factory(name, home / name)
            stack.callback(side.close)
            sides.append(side)
        yield sides


def alternate(sides: list[Any], rep: int) -> list[Any]:
    return sides if rep % 2 == 0 else sides[::-1]


def _pids(sides: list[Any]) -> list[int]:
    out = []
    for side in sides:
        for proc in (side.proc, getattr(side, "agent", None)):
            if proc is not None:
                out.append(proc.pid)
    return out


# ------------------------------------------------------------------ runs


def one_run(side: Any, w: Workload, everyone: list[Any], quiet_max: float) -> dict[str, Any]:
    """Load, settle, idle gate, then begin and wait for complete; with /proc counters."""
    side.prepare(w)
    time.sleep(1.0)
    measure.reap()
    quiet = measure.wait_quiet(max_wait=quiet_max) if quiet_max > 0 else {"quiet": None}
    others = [p for p in _pids(everyone) if p != side.pid]
    snap: dict[str, Any] = {}

    def before() -> None:
        snap["mem"] = measure.proc_mem(side.pid)
        measure.reset_hwm(side.pid)
        snap["cpu"] = measure.proc_cpu(side.pid)
        snap["own"] = measure.own_cpu()
        snap["others"] = sum(sum(measure.proc_cpu(p)) for p in others)
        snap["busy"] = measure.machine_busy()

    res = side.run(w, before)
    left = measure.wait_jobs_gone(side.job_folder(w))
    cpu, own = measure.proc_cpu(side.pid), measure.own_cpu()
    mem = measure.proc_mem(side.pid)
    others_cpu = sum(sum(measure.proc_cpu(p)) for p in others) - snap["others"]
    busy = measure.machine_busy() - snap["busy"]
    server = cpu[0] - snap["cpu"][0]
    children = cpu[1] - snap["cpu"][1]
    jobs = own[1] - snap["own"][1]
    total = server + children + jobs
    foreign = busy - total - (own[0] - snap["own"][0]) - others_cpu
    complete = side.count_complete(w)
    side.delete(w)
    return res | {
        "server_cpu_s": server,
        "total_cpu_s": total,
        "server_children_cpu_s": children,
        "jobs_cpu_s": jobs,
        "server_hwm_kib": mem["VmHWM"],
        "server_rss_before_kib": snap["mem"]["VmRSS"],
        "foreign_cpu_s": foreign,
        "clean": foreign <= 0.3 + 0.05 * res["wall_s"],
        "quiet_before": quiet["quiet"],
        "tasks_complete": complete,
        "ok": bool(res["completed"]) and complete == w.tasks,
        "jobs_left": left,
    }


def runs(
    factory: SideFactory,
    names: Sequence[str],
    w: Workload,
    home: Path,
    s: Settings,
    log: Callable[[str], None],
) -> dict[str, list[dict[str, Any]]]:
    """``s.reps`` runs of ``w`` on each side, alternating; an unclean run is redone
    (at most ``s.retries`` times per repetition)."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with opened(factory, names, home) as sides:
        for side in sides:
            side.start()
        for rep in range(s.reps):
            for side in alternate(sides, rep):
                for attempt in range(s.retries + 1):
                    res = one_run(side, w, sides, s.quiet_max)
                    log(
                        f"{w.name} {side.name} run {rep + 1}: wall {res['wall_s']:.2f} s, server CPU "
                        f"{res['server_cpu_s']:.2f} s, total {res['total_cpu_s']:.2f} s"
                        f"{'' if res['clean'] else ', disturbed'}{'' if res['ok'] else ', NOT OK'}"
                    )
                    if res["clean"] or attempt == s.retries:
                        out[side.name].append(res)
                        break
    return out


# ------------------------------------------------------------------ latency


def whole_process(command: list[str], env: dict[str, str] | None, n: int) -> list[float]:
    """Seconds for each of ``n`` runs of ``command`` (after one warm-up).

    The wait is a blocking ``waitpid``, bounded by an alarm: ``subprocess.run``
    with a timeout polls with sleeps of 1, 2, 4, 8 ms, which rounds a 3 ms
    process up to about 7.5 ms and hides any difference below that.
    """
    out = []
    previous = signal.signal(signal.SIGALRM, _too_long)
    try:
        for i in range(n + 1):
            signal.alarm(60)
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
            try:
                code = proc.wait()
            except BaseException:  # the alarm, or ^C: do not leave it running
                proc.kill()
                proc.wait()
                raise
            elapsed = time.perf_counter() - t0
            signal.alarm(0)
            if code != 0:
                raise subprocess.CalledProcessError(code, command)
            if i:
                out.append(elapsed)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return out


def _too_long(signum: int, frame: Any) -> None:
    raise TimeoutError("a timed process ran for more than 60 s")


def latency(
    factory: SideFactory, names: Sequence[str], home: Path, s: Settings, log: Callable[[str], None]
) -> dict[str, Any]:
    """Child command and ping as whole processes, ping in one client, full state of scale-10k."""
    import os

    from takler.tasks.render import default_include_dir, job_bin_dir

    out: dict[str, Any] = {}
    with opened(factory, names, home) as sides:
        for side in sides:
            side.start()
        by_name = {side.name: side for side in sides}
        takler = by_name["takler"]
        ecflow = by_name.get("ecFlow")

        def block(key: str, fn: Callable[[], list[float]]) -> None:
            values, meter = measure.gated(fn, lambda: _pids(sides), s.quiet_max)
            out[key] = measure.summary(values) | {"meter": meter}
            log(
                f"{key}: median {out[key]['median'] * 1e3:.2f} ms, p95 {out[key]['p95'] * 1e3:.2f} ms"
            )

        env = dict(os.environ) | takler.active_task()
        try:
            child = str(default_include_dir() / "child.takler")
            client = str(job_bin_dir() / "ecflow_client")
            whole = {
                "takler": [
                    (
                        "takler_label in bash (child.takler)",
                        ["bash", "-c", f". {child} && takler_label info x"],
                    ),
                    ("takler ecflow_client --label", [client, "--label=info", "x"]),
                    ("takler ecflow_client --ping", [client, "--ping"]),
                ],
                "ecFlow": [
                    (
                        "ecflow_client --ping (ecFlow)",
                        [
                            "ecflow_client",
                            "--host=127.0.0.1",
                            f"--port={getattr(ecflow, 'port', 0)}",
                            "--ping",
                        ],
                    ),
                ],
            }
            for side in sides:
                for key, command in whole[side.name]:
                    job_env = env if side is takler else None
                    block(key, partial(whole_process, command, job_env, s.calls))
            for side in sides[::-1]:
                block(f"ping in one client ({side.name})", partial(side.ping_n, s.calls))
        finally:
            takler.end_active_task()
        out["empty_rss_kib"] = {side.name: measure.proc_mem(side.pid)["VmRSS"] for side in sides}
        w = ALL["scale-10k"]
        for side in sides:
            out[f"load scale-10k ({side.name})"] = load_or_start(side, w, log)
        for side in sides:
            block(
                f"full state of scale-10k ({side.name})",
                partial(side.full_state_n, max(5, s.calls // 5)),
            )
    return out


def load_or_start(side: Any, w: Workload, log: Callable[[str], None]) -> dict[str, Any]:
    """Load ``w`` with the side's load command; takler falls back to a server start
    with the flow given when the command is refused (reported)."""
    from takler.core.errors import TaklerError

    try:
        return {"how": "load", "load_s": side.load(w)}
    except TaklerError as e:
        log(
            f"{side.name}: load of {w.name} refused ({e}); starting the server with the flow instead"
        )
        side.stop()
        for path in side.home.glob("*.db*"):
            path.unlink()
        up = side.start(workload=w.name, tasks=w.tasks)
        started = side.started
        return {
            "how": "start",
            "refused": str(e),
            "load_s": started["build_s"] + started["start_s"],
            "build_s": started["build_s"],
            "start_s": started["start_s"],
            "up_s": up,
        }


# ------------------------------------------------------------------ scale


def scale(
    factory: SideFactory,
    names: Sequence[str],
    w: Workload,
    home: Path,
    s: Settings,
    log: Callable[[str], None],
) -> dict[str, list[dict[str, Any]]]:
    """Load (not begun), RSS, checkpoint, restore after restart; a fresh server per rep."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for rep in range(s.reps):
        for name in alternate(list(names), rep):
            with opened(factory, [name], home / f"rep{rep}") as (side,):

                def measure_one(side: Any = side) -> dict[str, Any]:
                    side.start()
                    time.sleep(1.0)
                    empty = measure.proc_mem(side.pid)["VmRSS"]
                    res = load_or_start(side, w, log)
                    time.sleep(1.0)
                    res["rss_empty_kib"] = empty
                    res["rss_after_load_kib"] = measure.proc_mem(side.pid)["VmRSS"]
                    res["rss_per_task_kib"] = (res["rss_after_load_kib"] - empty) / w.tasks
                    res["checkpoint_s"], res["checkpoint_bytes"] = side.checkpoint()
                    res["restore_s"] = side.restore(w)
                    if hasattr(side, "store_bytes"):
                        res["store_bytes"] = side.store_bytes()
                    return res

                res, meter = measure.gated(measure_one, partial(_pids, [side]), s.quiet_max, 1)
                res["meter"] = meter
                log(
                    f"{w.name} {name} rep {rep + 1}: load {res['load_s']:.3f} s ({res['how']}), "
                    f"{res['rss_per_task_kib']:.2f} KiB/task, checkpoint {res['checkpoint_s']:.3f} s, "
                    f"restore {res['restore_s']:.3f} s"
                )
                out[name].append(res)
    return out


# ------------------------------------------------------------------ store


def store(
    factory: SideFactory, names: Sequence[str], home: Path, s: Settings, log: Callable[[str], None]
) -> dict[str, Any]:
    """Commands a second (``alter`` of a label) with takler's store on and off."""
    from benchmarks.takler_side import TaklerSide

    out: dict[str, Any] = {}
    n = max(50, s.calls * 10)
    for on in (True, False):
        side = TaklerSide(home / f"takler-store-{'on' if on else 'off'}", store=on)
        try:
            side.start()
            key = f"store {'on' if on else 'off'}"
            out[f"{key}, 1 client"] = side.commands_per_second(1, n)
            out[f"{key}, 10 clients"] = side.commands_per_second(10, n // 10)
            log(
                f"takler {key}: {out[f'{key}, 1 client']:.0f} commands/s from 1 client, "
                f"{out[f'{key}, 10 clients']:.0f} from 10"
            )
        finally:
            side.close()
    if "ecFlow" in names:
        with opened(factory, ["ecFlow"], home) as (ecflow,):
            ecflow.start()
            out["ecFlow, 1 client"] = ecflow.commands_per_second(n)
            log(f"ecFlow: {out['ecFlow, 1 client']:.0f} commands/s from 1 client")
    return out


__all__ = ["RUNS", "Settings", "latency", "runs", "scale", "store"]
