"""The standard workloads, built as takler flows and as ecFlow definitions.

Every task runs the same trivial job: it reports ``init``, then ``complete``,
with nothing in between, through the standard job header of its scheduler.

| name                | flow          | shape                                                    |
|---------------------|---------------|----------------------------------------------------------|
| W-wide-200          | wide200       | family f, 200 independent tasks t0..t199                 |
| W-wide-1000-limit20 | wide1000l20   | limit L 20 on the flow; f has inlimit L; 1000 tasks      |
| W-chain-100         | chain100      | family f, t0..t99; t{i} has trigger t{i-1} == complete   |
| scale-10k/-100k     | scale<N>      | N/100 families f<k> of t0..t99; variable V=j; a trigger  |
|                     |               | on a sibling (t{j-1} == complete; t1 != aborted for t0)  |

Scale flows are loaded, never begun.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from takler.core.node import Family, Flow

FAMILY_SIZE = 100


@attrs.frozen
class Workload:
    """One standard shape.

    Attributes:
        name: the name the harness and the tables use (``W-wide-200``).
        flow: the flow (ecFlow: suite) name.
        tasks: how many tasks.
        shape: ``wide``, ``chain`` or ``scale``.
        limit: the flow's limit L, if any (each task of f takes one token).
        poll: how often the ecFlow side polls the suite state while it runs (s).
    """

    name: str
    flow: str
    tasks: int
    shape: str
    limit: int | None = None
    poll: float = 0.2

    @property
    def runnable(self) -> bool:
        return self.shape != "scale"


RUNS = {
    w.name: w
    for w in (
        Workload("W-wide-200", "wide200", 200, "wide", poll=0.02),
        Workload("W-wide-1000-limit20", "wide1000l20", 1000, "wide", limit=20),
        Workload("W-chain-100", "chain100", 100, "chain"),
    )
}
SCALES = {
    w.name: w
    for w in (
        Workload("scale-10k", "scale10000", 10_000, "scale"),
        Workload("scale-100k", "scale100000", 100_000, "scale"),
    )
}
ALL = {**RUNS, **SCALES}

# --------------------------------------------------------------------- scripts

#: takler's trivial task: the standard head reports init, the tail complete.
TAKLER_SCRIPT = '{% include "head.takler" %}\n# nothing\n{% include "tail.takler" %}\n'

#: ecFlow's trivial task, with the minimal head.h and tail.h below.
ECF_SCRIPT = "%include <head.h>\n# nothing\n%include <tail.h>\n"

# Loopback only; ECF_TIMEOUT and ECF_DENIED keep an orphaned job from
# retrying for a day when its server is gone.
ECF_HEAD = """#!/bin/sh
set -e
set -u
ECF_PORT=%ECF_PORT%
ECF_HOST=127.0.0.1
ECF_NAME=%ECF_NAME%
ECF_PASS=%ECF_PASS%
ECF_TRYNO=%ECF_TRYNO%
ECF_RID=$$
ECF_TIMEOUT=60
ECF_DENIED=1
export ECF_PORT ECF_HOST ECF_NAME ECF_PASS ECF_TRYNO ECF_RID ECF_TIMEOUT ECF_DENIED
ERROR() {
  set +e
  wait
  ecflow_client --abort=trap
  trap 0
  exit 0
}
trap ERROR 0
trap '{ ERROR ; }' 1 2 3 4 5 6 7 8 10 12 13 15
ecflow_client --init=$$
"""
ECF_TAIL = """wait
ecflow_client --complete
trap 0
exit 0
"""
ECF_JOB_CMD = "%ECF_JOB% 1> %ECF_JOBOUT% 2>&1 &"


def task_paths(w: Workload) -> list[str]:
    """Each task's path below the flow (``f/t0``...)."""
    if w.shape == "scale":
        return [f"f{k}/t{j}" for k in range(w.tasks // FAMILY_SIZE) for j in range(FAMILY_SIZE)]
    return [f"f/t{i}" for i in range(w.tasks)]


def _install(root: Path, paths: list[str], suffix: str, text: str) -> None:
    for path in paths:
        script = root / f"{path}{suffix}"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text, encoding="utf-8")


def install_takler_scripts(w: Workload, files: Path) -> None:
    """Write ``<files>/<flow>/f/t<i>.takler`` for every task of ``w``."""
    _install(files / w.flow, task_paths(w), ".takler", TAKLER_SCRIPT)


def install_ecflow_scripts(w: Workload, ecf_home: Path) -> Path:
    """Write ``ECF_HOME/<suite>/f/t<i>.ecf`` (ecFlow's default script place)
    and the include folder; returns the include folder."""
    include = ecf_home / "include"
    include.mkdir(parents=True, exist_ok=True)
    (include / "head.h").write_text(ECF_HEAD, encoding="utf-8")
    (include / "tail.h").write_text(ECF_TAIL, encoding="utf-8")
    _install(ecf_home / w.flow, task_paths(w), ".ecf", ECF_SCRIPT)
    return include


# --------------------------------------------------------------------- takler


def takler_flow(w: Workload, files: Path | None = None) -> Flow:
    """The workload as a new takler flow.

    Args:
        w: the shape.
        files: where the task scripts are (``TAKLER_FILES``); runnable
            workloads only.
    """
    flow = Flow(w.flow)
    if files is not None:
        flow.add_parameter("TAKLER_FILES", str(files))
    if w.shape == "scale":
        for k in range(w.tasks // FAMILY_SIZE):
            _scale_family(flow.add_family(f"f{k}"))
        return flow
    family = flow.add_family("f")
    if w.limit is not None:
        flow.add_limit("L", w.limit)
        family.add_in_limit("L")
    for i in range(w.tasks):
        task = family.add_task(f"t{i}")
        if w.shape == "chain" and i > 0:
            task.add_trigger(f"t{i - 1} == complete")
    return flow


def _scale_family(family: Family) -> None:
    for j in range(FAMILY_SIZE):
        task = family.add_task(f"t{j}")
        task.add_parameter("V", j)
        task.add_trigger("t1 != aborted" if j == 0 else f"t{j - 1} == complete")


def store_flow() -> Flow:
    """A flow of ten tasks with a label each, the target of the store on/off test."""
    flow = Flow("storebench")
    family = flow.add_family("f")
    for i in range(10):
        family.add_task(f"t{i}").add_label("info", "")
    return flow


# --------------------------------------------------------------------- ecFlow


def ecflow_def(w: Workload, include: Path | None = None) -> str:
    """The workload as ecFlow definition text (one suite)."""
    out = [f"suite {w.flow}"]
    if include is not None:
        out.append(f"  edit ECF_INCLUDE '{include}'")
        out.append(f"  edit ECF_JOB_CMD '{ECF_JOB_CMD}'")
    if w.limit is not None:
        out.append(f"  limit L {w.limit}")
    if w.shape == "scale":
        for k in range(w.tasks // FAMILY_SIZE):
            out.append(f"  family f{k}")
            for j in range(FAMILY_SIZE):
                trigger = "t1 != aborted" if j == 0 else f"t{j - 1} == complete"
                out += [f"    task t{j}", f"      edit V '{j}'", f"      trigger {trigger}"]
            out.append("  endfamily")
    else:
        out.append("  family f")
        if w.limit is not None:
            out.append("    inlimit L")
        for i in range(w.tasks):
            out.append(f"    task t{i}")
            if w.shape == "chain" and i > 0:
                out.append(f"      trigger t{i - 1} == complete")
        out.append("  endfamily")
    out.append("endsuite")
    return "\n".join(out) + "\n"


def write_ecflow_def(w: Workload, folder: Path, include: Path | None = None) -> Path:
    """Write ``<folder>/<suite>.def``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{w.flow}.def"
    path.write_text(ecflow_def(w, include), encoding="utf-8")
    return path


def store_ecflow_def() -> str:
    """The store test's flow as ecFlow definition text."""
    tasks = "".join(f"    task t{i}\n      label info ''\n" for i in range(10))
    return f"suite storebench\n  family f\n{tasks}  endfamily\nendsuite\n"
