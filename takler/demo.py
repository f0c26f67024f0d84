"""The demo flow ``takler demo`` runs: a small forecast-like suite that finishes in seconds.

It shows families, triggers on states and events, events, meters, labels, a
limit and a repeat, with trivial task scripts (Jinja2 templates) written
under the home it is given.
"""

from __future__ import annotations

from pathlib import Path

from takler.core.node import Family, Flow, Task
from takler.tasks.shell import ShellScriptTask

FLOW_NAME = "demo"

_HEAD = '{% include "head.takler" %}\n'
_TAIL = '{% include "tail.takler" %}\n'

#: task path below the flow -> the body of its script
SCRIPTS = {
    "prepare/fetch": (
        "for i in 1 2 3; do\n"
        "    takler_meter progress $i\n"
        "done\n"
        'takler_label info "3 input files"\n'
        "takler_event data_ready\n"
    ),
    "prepare/check": 'echo "checking input of {{ FLOW }}"\n',
    "forecast/model_a": 'takler_label step "step {{ STEP }} of model a"\n',
    "forecast/model_b": 'takler_label step "step {{ STEP }} of model b"\n',
    "forecast/model_c": 'takler_label step "step {{ STEP }} of model c"\n',
    "products/plot": ("for i in 1 2; do\n    takler_meter maps $i\ndone\n"),
    "products/archive": 'takler_label where "archived to {{ TAKLER_HOME }}"\n',
}


def create_flow(home: Path) -> Flow:
    """The demo flow, with its scripts written under ``home``.

    Args:
        home: the folder for scripts, jobs and their output (``TAKLER_HOME``).

    Returns:
        A new, unattached ``demo`` flow of seven tasks (eleven runs: the
        forecast family repeats three times).

    Raises:
        OSError: the scripts cannot be written.
    """
    home = Path(home)
    flow = Flow(FLOW_NAME)
    flow.add_parameter("TAKLER_HOME", home)
    flow.add_parameter("TAKLER_TRIES", 1)
    flow.add_limit("workers", 2)

    prepare = flow.add_family("prepare")
    fetch = _task(prepare, "fetch")
    fetch.add_event("data_ready")
    fetch.add_meter("progress", 0, 3)
    fetch.add_label("info", "")
    check = _task(prepare, "check")
    check.add_trigger("fetch:data_ready")

    forecast = flow.add_family("forecast")
    forecast.add_trigger("prepare == complete")
    forecast.add_repeat("integer STEP 1 3")
    forecast.add_in_limit("workers")
    for name in ("model_a", "model_b", "model_c"):
        _task(forecast, name).add_label("step", "")

    products = flow.add_family("products")
    products.add_trigger("forecast == complete")
    plot = _task(products, "plot")
    plot.add_meter("maps", 0, 2)
    archive = _task(products, "archive")
    archive.add_trigger("plot == complete")
    archive.add_label("where", "")

    write_scripts(home)
    return flow


def write_scripts(home: Path) -> None:
    """Write the demo's task scripts as ``home/demo/<family>/<task>.takler``."""
    for path, body in SCRIPTS.items():
        script = Path(home, FLOW_NAME, f"{path}.takler")
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(_HEAD + body + _TAIL, encoding="utf-8")


def _task(family: Family, name: str) -> Task:
    return family.add_task(ShellScriptTask(name))
