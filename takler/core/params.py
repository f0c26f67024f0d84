"""Parameters: user values inherited down the tree, and generated ones.

Lookup order for a name: the node's user parameters, its generated ones,
then the same on each ancestor, then the bunch (server variables).
"""

from __future__ import annotations

import datetime as dt

from takler.core.calendar import julian_day, to_yyyymmdd
from takler.core.node import Family, Flow, Node, ParamValue, Task

_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip


def _home(node: Node) -> str:
    home = find_parameter(node, "TAKLER_HOME")
    return str(home) if home is not None else "."


def _task_parameters(task: Task) -> dict[str, ParamValue]:
    path = task.node_path
    home = _home(task)
    out: dict[str, ParamValue] = {
        "TASK": task.name,
        "TAKLER_NAME": path,
        "TAKLER_TRYNO": task.tryno,
        "TAKLER_PASSWORD": task.password or "",
        "TAKLER_RID": task.rid or "",
    }
    if not any("TAKLER_SCRIPT" in n.parameters for n in (task, *task.ancestors())):
        files = find_parameter(task, "TAKLER_FILES")
        out["TAKLER_SCRIPT"] = f"{files if files is not None else home}{path}.takler"
    if "TAKLER_JOB" not in task.parameters:
        out["TAKLER_JOB"] = f"{home}{path}.job{task.tryno}"
    if "TAKLER_JOBOUT" not in task.parameters:
        # TAKLER_OUT (ecFlow's ECF_OUT) puts outputs apart from the job files.
        outputs = find_parameter(task, "TAKLER_OUT")
        root = home if outputs is None or outputs == "" else str(outputs)
        out["TAKLER_JOBOUT"] = f"{root}{path}.{task.tryno}"
    return out


def _calendar(now: dt.datetime) -> dict[str, ParamValue]:
    day = now.date()
    return {
        "TAKLER_DATE": to_yyyymmdd(day),
        "TAKLER_JULIAN": julian_day(day),
        "TAKLER_CLOCK": now.strftime("%Y-%m-%dT%H:%M"),
        "YYYY": f"{day.year:04d}",
        "MM": f"{day.month:02d}",
        "DD": f"{day.day:02d}",
        "DOW": (day.weekday() + 1) % 7,
        "DOY": day.timetuple().tm_yday,
        "DATE": day.strftime("%d.%m.%Y"),
        "DAY": _DAYS[day.weekday()],
        "MONTH": _MONTHS[day.month - 1],
        "TIME": now.strftime("%H%M"),
    }


def generated_parameters(node: Node) -> dict[str, ParamValue]:
    """The parameters takler computes for ``node`` itself (not its ancestors)."""
    out: dict[str, ParamValue] = {}
    if isinstance(node, Flow):
        out["FLOW"] = node.name
        bunch = node.bunch
        if bunch is not None:
            out.update(_calendar(bunch.now))
    elif isinstance(node, Family):
        out["FAMILY"] = node.name
    elif isinstance(node, Task):
        out.update(_task_parameters(node))
    if node.repeat is not None:
        out.update(node.repeat.variables())
    return out


_TASK_NAMES = frozenset(
    {"TASK", "TAKLER_NAME", "TAKLER_TRYNO", "TAKLER_PASSWORD", "TAKLER_RID",
     "TAKLER_SCRIPT", "TAKLER_JOB", "TAKLER_JOBOUT"}
)  # fmt: skip


def _generated_one(node: Node, name: str) -> ParamValue | None:
    """One generated parameter of ``node`` itself, without building them all."""
    if node.repeat is not None:
        value = node.repeat.variables().get(name)
        if value is not None:
            return value
    if isinstance(node, Task):
        return _task_parameters(node).get(name) if name in _TASK_NAMES else None
    if isinstance(node, Flow):
        if name == "FLOW":
            return node.name
        bunch = node.bunch
        if bunch is not None and name in _CALENDAR_NAMES:
            return _calendar(bunch.now)[name]
        return None
    if isinstance(node, Family) and name == "FAMILY":
        return node.name
    return None


_CALENDAR_NAMES = frozenset(_calendar(dt.datetime(2000, 1, 1)))


def find_parameter(node: Node, name: str) -> ParamValue | None:
    current: Node | None = node
    last: Node = node
    while current is not None:
        value = current.parameters.get(name)
        if value is not None:
            return value
        value = _generated_one(current, name)
        if value is not None:
            return value
        last = current
        current = current.parent
    bunch = last.bunch if isinstance(last, Flow) else None
    if bunch is not None:
        return bunch.parameters.get(name)
    return None


def all_parameters(node: Node) -> dict[str, tuple[ParamValue, str, str]]:
    """Every parameter visible at ``node``: name -> (value, origin, where defined).

    ``origin`` is ``user``, ``generated``, ``inherited`` (user or generated on
    an ancestor) or ``server``.
    """
    out: dict[str, tuple[ParamValue, str, str]] = {}
    chain = [node, *node.ancestors()]
    for current in chain:
        path = current.node_path
        for name, value in current.parameters.items():
            out.setdefault(name, (value, "user" if current is node else "inherited", path))
        for name, value in generated_parameters(current).items():
            out.setdefault(name, (value, "generated" if current is node else "inherited", path))
    bunch = chain[-1].bunch if isinstance(chain[-1], Flow) else None
    if bunch is not None:
        for name, value in bunch.parameters.items():
            out.setdefault(name, (value, "server", "/"))
    return out


def variables_for_job(task: Task) -> dict[str, str]:
    """Every visible parameter of ``task`` as strings, for rendering its job."""
    out = {}
    for name, (value, _, _) in all_parameters(task).items():
        out[name] = str(int(value)) if isinstance(value, bool) else str(value)
    return out
