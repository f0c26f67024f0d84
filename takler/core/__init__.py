"""The flow model: a pure attrs graph with no I/O, no Trio and no clock reads.

Names are imported lazily so that light users (the job-side child client
needs only :mod:`takler.core.errors`) do not pay for the whole model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Bunch": "takler.core.bunch",
    "Change": "takler.core.change",
    "ChangeKind": "takler.core.change",
    "Event": "takler.core.attributes",
    "ExprAttr": "takler.core.attributes",
    "InLimit": "takler.core.attributes",
    "Label": "takler.core.attributes",
    "Limit": "takler.core.attributes",
    "Meter": "takler.core.attributes",
    "Family": "takler.core.node",
    "Flow": "takler.core.node",
    "Node": "takler.core.node",
    "NodeContainer": "takler.core.node",
    "Task": "takler.core.node",
    "NodeStatus": "takler.core.status",
    "TaklerError": "takler.core.errors",
    "ops": "takler.core.ops",
}

__all__ = [
    "Bunch",
    "Change",
    "ChangeKind",
    "Event",
    "ExprAttr",
    "Family",
    "Flow",
    "InLimit",
    "Label",
    "Limit",
    "Meter",
    "Node",
    "NodeContainer",
    "NodeStatus",
    "TaklerError",
    "Task",
    "ops",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'takler.core' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name == "ops" else getattr(mod, name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from takler.core import ops
    from takler.core.attributes import Event, ExprAttr, InLimit, Label, Limit, Meter
    from takler.core.bunch import Bunch
    from takler.core.change import Change, ChangeKind
    from takler.core.errors import TaklerError
    from takler.core.node import Family, Flow, Node, NodeContainer, Task
    from takler.core.status import NodeStatus
