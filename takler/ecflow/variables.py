"""ecFlow's ECF_* variables and their takler equivalents.

Two directions:

* :func:`takler_settings` maps what a .def sets (``edit ECF_HOME /x``) onto
  the TAKLER_* name takler reads (``TAKLER_HOME``), keeping the ECF_* name
  too, so scripts using either work.
* :func:`ecflow_aliases` adds the ECF_* names for the values takler
  generates (``ECF_NAME`` = ``TAKLER_NAME``...), so ``%ECF_PASS%`` works in
  an ``.ecf`` script and in an ECF_JOB_CMD.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Every ecFlow variable takler has an equivalent of.
ECF_TO_TAKLER: dict[str, str] = {
    # set by the suite designer
    "ECF_HOME": "TAKLER_HOME",
    "ECF_FILES": "TAKLER_FILES",
    "ECF_INCLUDE": "TAKLER_INCLUDE",
    "ECF_TRIES": "TAKLER_TRIES",
    "ECF_JOB_CMD": "TAKLER_JOB_CMD",
    "ECF_KILL_CMD": "TAKLER_KILL_CMD",
    "ECF_STATUS_CMD": "TAKLER_STATUS_CMD",
    # generated for each task (a .def may still override the file names)
    "ECF_SCRIPT": "TAKLER_SCRIPT",
    "ECF_JOB": "TAKLER_JOB",
    "ECF_JOBOUT": "TAKLER_JOBOUT",
    "ECF_OUT": "TAKLER_OUT",
    "ECF_NAME": "TAKLER_NAME",
    "ECF_PASS": "TAKLER_PASSWORD",
    "ECF_TRYNO": "TAKLER_TRYNO",
    "ECF_RID": "TAKLER_RID",
    # the server, as jobs reach it
    "ECF_HOST": "TAKLER_HOST",
    "ECF_NODE": "TAKLER_HOST",
    "ECF_PORT": "TAKLER_PORT",
    # head.h files put %ECF_VERSION%'s bin folder on PATH; takler's shim still wins
    "ECF_VERSION": "TAKLER_VERSION",
    # generated on the suite (flow)
    "ECF_DATE": "TAKLER_DATE",
    "ECF_JULIAN": "TAKLER_JULIAN",
    "SUITE": "FLOW",
}

#: ECF_* names a .def may set that take effect in takler under their TAKLER_* name.
SETTABLE = frozenset(
    {
        "ECF_HOME", "ECF_FILES", "ECF_INCLUDE", "ECF_TRIES", "ECF_JOB_CMD", "ECF_KILL_CMD",
        "ECF_STATUS_CMD", "ECF_SCRIPT", "ECF_JOB", "ECF_JOBOUT", "ECF_OUT",
    }
)  # fmt: skip


def takler_settings(variables: Mapping[str, str]) -> dict[str, str]:
    """``variables`` plus, for each settable ECF_* name, its TAKLER_* twin.

    A TAKLER_* value set explicitly wins over the one derived from ECF_*.
    """
    out = dict(variables)
    for ecf, takler in ECF_TO_TAKLER.items():
        if ecf in SETTABLE and ecf in variables:
            out.setdefault(takler, variables[ecf])
    return out


def ecflow_aliases(variables: Mapping[str, object]) -> dict[str, str]:
    """``variables`` (as strings) plus the ECF_* names of takler's values.

    An ECF_* name already present keeps its value. ``FAMILY`` becomes the
    family path below the suite, as in ecFlow (``/s/f1/f2/t`` gives
    ``f1/f2``), and ``FAMILY1`` the innermost family's name.
    """
    out = {name: str(value) for name, value in variables.items()}
    for ecf, takler in ECF_TO_TAKLER.items():
        if ecf not in out and takler in out:
            out[ecf] = out[takler]
    name = out.get("TAKLER_NAME")
    if name:
        parts = [p for p in name.split("/") if p]
        out.setdefault("SUITE", parts[0])
        if len(parts) > 2:
            out["FAMILY"] = "/".join(parts[1:-1])
            out.setdefault("FAMILY1", parts[-2])
    return out
