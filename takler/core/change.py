"""Changes are values: every mutation of the model yields Change records.

The scheduler, the store and subscribers all consume the same records.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs


class ChangeKind(enum.Enum):
    status = "status"  # name: None; old/new: state names
    suspended = "suspended"  # old/new: bool
    event = "event"  # name: event; old/new: bool
    meter = "meter"  # name: meter; old/new: int
    label = "label"  # name: label; old/new: str
    variable = "variable"  # name: variable; old/new: value or None (added/deleted)
    repeat = "repeat"  # name: repeat; old/new: index
    limit = "limit"  # name: limit; old/new: tokens in use (or max for alter)
    trigger = "trigger"  # name: "trigger" | "complete"; old/new: text or None
    tries = "tries"  # old/new: try number
    submission = "submission"  # new: dict with tryno, password, runner, rid, ...
    time = "time"  # name: "free"/"late"/...; time latches and flags
    flag = "flag"  # name: flag name; old/new: bool
    node_added = "node_added"  # new: path
    node_deleted = "node_deleted"  # old: path
    begun = "begun"  # new: bool (flows)
    attribute = "attribute"  # name: event, meter or label; old/new: its data or None (added/deleted)
    server = "server"  # name: "state"; old/new: server state


@attrs.frozen
class Change:
    """One applied mutation: at ``path``, ``kind`` ``name`` went ``old`` -> ``new``."""

    path: str
    kind: ChangeKind
    name: str | None = None
    old: Any = None
    new: Any = None
