"""Measuring on Linux: /proc counters, reaping orphaned jobs, the idle gate, statistics."""

from __future__ import annotations

import ctypes
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

CLK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36

# ------------------------------------------------------------------ statistics


def p95(xs: Iterable[float]) -> float:
    """Nearest-rank 95th percentile (the 48th of 50 sorted values)."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def summary(xs: Iterable[float]) -> dict[str, Any]:
    """n, median, p95, min, max and the values themselves."""
    values = list(xs)
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": p95(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def median(xs: Iterable[float | None]) -> float | None:
    values = [x for x in xs if x is not None]
    return statistics.median(values) if values else None


# ------------------------------------------------------------------ /proc


def proc_cpu(pid: int) -> tuple[float, float]:
    """(utime+stime, cutime+cstime) of ``pid`` in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # The command name may hold spaces: count fields from its closing parenthesis.
    fields = data[data.rindex(b")") + 2 :].split()
    ut, st, cut, cst = (int(fields[i]) for i in (11, 12, 13, 14))
    return (ut + st) / CLK, (cut + cst) / CLK


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def reset_hwm(pid: int) -> bool:
    """Reset the peak RSS (VmHWM) of ``pid``; False when the kernel refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine: user+nice+system+irq+softirq."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK


def own_cpu() -> tuple[float, float]:
    """(CPU s of this process, CPU s of the children it reaped so far)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


# ------------------------------------------------------------------ orphans


def become_subreaper() -> bool:
    """Adopt orphaned descendants (jobs a server started with ``&``), so that
    reaping them adds their CPU, and their child commands', to :func:`own_cpu`."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


#: pid -> Popen of the long-lived children (servers, agents) that reap() must
#: leave to their Popen, so their exit status is not lost.
KEEP: dict[int, subprocess.Popen[Any]] = {}


def reap(limit: int = 100_000) -> int:
    """Reap every exited orphan; returns how many."""
    n = 0
    for _ in range(limit):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None or info.si_pid == 0:
            break
        kept = KEEP.pop(info.si_pid, None)
        if kept is not None:
            kept.poll()
            continue
        os.waitpid(info.si_pid, os.WNOHANG)
        n += 1
    return n


def processes_under(folder: str) -> list[int]:
    """Pids of jobs still running from ``folder`` (a job file there on their command line)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if folder in cmd and ".job" in cmd:
            pids.append(int(entry))
    return pids


def wait_jobs_gone(folder: str, timeout: float = 10.0) -> int:
    """Reap until no process runs from ``folder`` (bounded); returns how many are left."""
    left: list[int] = []
    for _ in range(int(timeout / 0.05) + 1):
        reap()
        left = processes_under(folder)
        if not left:
            break
        time.sleep(0.05)
    reap()
    return len(left)


# ------------------------------------------------------------------ idle gate


def wait_quiet(
    max_wait: float = 120.0, window: float = 2.0, threshold: float = 0.10, need: int = 3
) -> dict[str, Any]:
    """Wait, at most ``max_wait`` s, until the machine's busy CPU stayed below
    ``threshold`` of one CPU in ``need`` consecutive windows of ``window`` s."""
    t0 = time.monotonic()
    load, ok = None, 0
    for _ in range(int(max_wait / window) + 1):
        b0 = machine_busy()
        time.sleep(window)
        load = (machine_busy() - b0) / window
        ok = ok + 1 if load < threshold else 0
        if ok >= need or time.monotonic() - t0 > max_wait:
            break
    return {"waited_s": time.monotonic() - t0, "load": load, "quiet": ok >= need}


class Foreign:
    """CPU used on the machine by others than us, our reaped children and the
    given server processes, between construction and :meth:`stop`."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self.t0, self.busy0, self.ours0 = self._snap()

    def _snap(self) -> tuple[float, float, float]:
        me, kids = own_cpu()
        ours = me + kids
        for pid in self.pids:
            try:
                own, reaped = proc_cpu(pid)
            except OSError:
                continue
            ours += own + reaped
        return time.monotonic(), machine_busy(), ours

    def stop(self) -> dict[str, Any]:
        reap()
        t1, busy1, ours1 = self._snap()
        wall = t1 - self.t0
        foreign = (busy1 - self.busy0) - (ours1 - self.ours0)
        return {"wall_s": wall, "foreign_cpu_s": foreign, "clean": foreign <= 0.3 + 0.05 * wall}


def gated(
    fn: Callable[[], Any], pids: Callable[[], Iterable[int]], quiet_max: float, attempts: int = 3
) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` after the idle gate, again (bounded) while others disturbed
    it; returns the result of the clean or least disturbed attempt and its meter."""
    best: tuple[Any, dict[str, Any]] | None = None
    for i in range(attempts):
        quiet = wait_quiet(max_wait=quiet_max) if quiet_max > 0 else {"quiet": None}
        meter = Foreign(pids())
        result = fn()
        info = meter.stop() | {"quiet_before": quiet["quiet"], "attempt": i + 1}
        if best is None or info["foreign_cpu_s"] < best[1]["foreign_cpu_s"]:
            best = (result, info)
        if info["clean"]:
            break
    assert best is not None
    return best


# ------------------------------------------------------------------ machine


def free_port(low: int = 20000, high: int = 49151) -> int:
    """A TCP port free on 127.0.0.1 right now, in [low, high] (ecFlow refuses
    ports above 49151, where the kernel picks ephemeral ones)."""
    for _ in range(1000):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


def _sh(command: str) -> str:
    try:
        return subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"<{e}>"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "os": _sh(". /etc/os-release && echo $PRETTY_NAME"),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "ecflow": _sh("ecflow_server --version 2>&1 | head -1")
        if shutil.which("ecflow_server")
        else "",
    }
