"""The flow model: a pure attrs graph with no I/O, no Trio and no clock reads."""

from takler.core.attributes import Event, ExprAttr, InLimit, Label, Limit, Meter
from takler.core.bunch import Bunch
from takler.core.change import Change, ChangeKind
from takler.core.errors import TaklerError
from takler.core.node import Family, Flow, Node, NodeContainer, Task
from takler.core.status import NodeStatus

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
]
