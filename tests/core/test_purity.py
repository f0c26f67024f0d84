"""takler.core is pure: no Trio, sockets, subprocesses or event loops, and no clock reads."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "takler" / "core"
FORBIDDEN_MODULES = ("trio", "socket", "subprocess", "asyncio")

_PROBE = """
import importlib, json, pkgutil, sys
import takler.core
names = sorted(m.name for m in pkgutil.walk_packages(takler.core.__path__, "takler.core."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def test_importing_every_core_module_pulls_in_no_io():
    root = str(CORE.parents[1])
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONPATH": root, "PATH": ""},
        timeout=60,
    )
    data = json.loads(result.stdout)
    expected = {f"takler.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__"}
    assert expected <= set(data["imported"])
    loaded = {m.split(".")[0] for m in data["modules"]}
    assert not loaded & set(FORBIDDEN_MODULES), sorted(loaded & set(FORBIDDEN_MODULES))


# What reads a clock: (the name called, what it is called on; None = called bare).
_CLOCK_CALLS = {
    ("time", "time"),
    ("time_ns", "time"),
    ("now", "datetime"),
    ("utcnow", "datetime"),
    ("today", "datetime"),
    ("today", "date"),
    ("monotonic", "time"),
    ("monotonic_ns", "time"),
    ("perf_counter", None),
    ("perf_counter", "time"),
    ("monotonic", None),
}


def clock_reads(source: str, filename: str = "<source>") -> list[str]:
    """Every call in ``source`` that reads a clock, as ``file:line: text``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names]
            if module == "time" or (module is None and "time" in names):
                found.append(f"{filename}:{node.lineno}: imports the time module")
            continue
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = func.value
            owner_name = (
                owner.attr if isinstance(owner, ast.Attribute)
                else owner.id if isinstance(owner, ast.Name)
                else None
            )  # fmt: skip
            key = (func.attr, owner_name)
        elif isinstance(func, ast.Name):
            key = (func.id, None)
        else:
            continue
        if key in _CLOCK_CALLS:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import time\nx = time.time()",
        "import datetime as dt\nx = dt.datetime.now()",
        "from datetime import datetime\nx = datetime.now(tz=None)",
        "import datetime\nx = datetime.datetime.today()",
        "from datetime import date\nx = date.today()",
        "x = time.monotonic()",
        "from time import perf_counter\nx = perf_counter()",
    ],
)
def test_the_scan_catches_clock_reads(source):
    assert clock_reads(source)


def test_the_scan_lets_pure_datetime_code_pass():
    source = (
        "import datetime as dt\nx = dt.datetime(2024, 1, 1) + dt.timedelta(days=1)\ny = x.time()"
    )
    assert clock_reads(source) == []


def test_core_reads_no_clock():
    files = sorted(CORE.glob("*.py"))
    assert files
    found = [hit for path in files for hit in clock_reads(path.read_text(), path.name)]
    assert found == []
