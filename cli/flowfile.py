"""Read the flows a file defines: a Python module, an ecFlow ``.def`` or a JSON dump.

A Python file is imported as a module (never as ``__main__``, so its
``main()`` does not run). Its flows are the result of ``create_flows()`` or
else ``create_flow()``, plus any :class:`~takler.core.Flow` bound at module
level. A function that takes a ``home`` argument receives the server's home.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from takler.core.errors import DefinitionError, TaklerError
from takler.core.node import Flow

_FACTORIES = ("create_flows", "create_flow")


def load_flows(path: str | Path, home: Path | None = None) -> list[Flow]:
    """The flows defined in ``path`` (``.py``, ``.def`` or ``.json``).

    Args:
        path: the flow file.
        home: passed to ``create_flow(home)``/``create_flows(home)`` when they take it.

    Returns:
        The flows, detached from any bunch, with distinct names.

    Raises:
        DefinitionError: the file is missing, does not load, or defines no flow;
            the message is one line naming the file (and the line when known).
    """
    file = Path(path)
    if not file.is_file():
        raise DefinitionError(f"{file}: no such file")
    suffix = file.suffix.lower()
    if suffix == ".def":
        from takler.ecflow.defs import flows_from_def_file

        flows = flows_from_def_file(file)
    elif suffix == ".json":
        flows = _flows_from_json(file)
    elif suffix == ".py":
        flows = _flows_from_module(file, home)
    else:
        raise DefinitionError(f"{file}: expected a .py, .def or .json flow file")
    if not flows:
        raise DefinitionError(
            f"{file}: defines no flow (expected module-level Flow objects,"
            " create_flow() or create_flows())"
        )
    _check_names(file, flows)
    return flows


def _flows_from_json(file: Path) -> list[Flow]:
    from takler.codec import load_flow

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"{file}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DefinitionError(f"{file} line {exc.lineno}: bad JSON: {exc.msg}") from None
    if isinstance(data, dict):
        items = data.get("flows", [data])  # a bunch dump or checkpoint holds "flows"
    elif isinstance(data, list):
        items = data
    else:
        raise DefinitionError(f"{file}: expected a flow dump (an object) or a list of them")
    try:
        return [load_flow(item) for item in items]
    except TaklerError as exc:
        raise DefinitionError(f"{file}: {exc}") from None


def _flows_from_module(file: Path, home: Path | None) -> list[Flow]:
    module = _import(file)
    flows: list[Flow] = []
    for name in _FACTORIES:
        factory = getattr(module, name, None)
        if callable(factory):
            result = _call(file, factory, home)
            flows.extend(_as_flows(file, name, result))
            break
    taken = {f.name for f in flows}
    for value in vars(module).values():
        if isinstance(value, Flow) and value.name not in taken and value.bunch is None:
            flows.append(value)
            taken.add(value.name)
    return flows


def _module_name(file: Path) -> str:
    return "takler_flowfile_" + re.sub(r"\W", "_", file.stem)


def _import(file: Path) -> ModuleType:
    name = _module_name(file)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        # As `python FILE` would: the file may import its neighbours.
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        where = Path(exc.filename).name if exc.filename else file.name
        raise DefinitionError(
            f"{file}: syntax error in {where} line {exc.lineno}: {exc.msg}"
        ) from None
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise _user_error(file, exc, "import failed") from None
    return module


def _call(file: Path, factory: Callable[..., Any], home: Path | None) -> Any:
    kwargs: dict[str, Any] = {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "home" in params:
        kwargs["home"] = home if home is not None else Path.cwd()
    try:
        return factory(**kwargs)
    except (Exception, SystemExit) as exc:
        raise _user_error(file, exc, f"{factory.__name__}() failed") from None


def _as_flows(file: Path, name: str, result: Any) -> list[Flow]:
    items = [result] if isinstance(result, Flow) else result
    try:
        flows = list(items)
    except TypeError:
        flows = [items]
    bad = [f for f in flows if not isinstance(f, Flow)]
    if bad:
        raise DefinitionError(
            f"{file}: {name}() must return Flow objects, not {type(bad[0]).__name__}"
        )
    return flows


def _check_names(file: Path, flows: list[Flow]) -> None:
    seen: set[str] = set()
    for flow in flows:
        if flow.name in seen:
            raise DefinitionError(f"{file}: two flows are named {flow.name}")
        seen.add(flow.name)


def _user_error(file: Path, exc: BaseException, what: str) -> DefinitionError:
    """A one-line error naming the line of ``file`` the exception came through."""
    line = _line_in(file, exc.__traceback__)
    where = f"{file} line {line}" if line is not None else str(file)
    text = " ".join(str(exc).split()) or "(no message)"
    kind = "" if isinstance(exc, TaklerError) else f"{type(exc).__name__}: "
    return DefinitionError(f"{where}: {what}: {kind}{text}")


def _line_in(file: Path, tb: TracebackType | None) -> int | None:
    target = str(file.resolve())
    line = None
    while tb is not None:
        try:
            same = str(Path(tb.tb_frame.f_code.co_filename).resolve()) == target
        except OSError:
            same = False
        if same:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
