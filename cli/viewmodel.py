"""What the live view knows: the tree of a snapshot kept current by deltas.

Applying a delta costs O(changes x depth): each node keeps the count of tasks
per state in its subtree, so the renderer can collapse or summarise a family
without walking it. Time is an argument (``now``, epoch seconds); nothing
here reads a clock.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

#: task states in the order the header lists them
STATES = ("unknown", "queued", "submitted", "active", "complete", "aborted", "suspended")
#: states whose tasks are never hidden by collapsing
BUSY = ("aborted", "active", "submitted")
EVENT_LINES = 8


@attrs.define(eq=False, slots=True)
class VNode:
    """One node as the view shows it."""

    path: str
    name: str
    kind: str
    state: str = "unknown"
    parent: VNode | None = None
    children: dict[str, VNode] = attrs.Factory(dict)
    tryno: int = 0
    #: when the node entered its state (epoch seconds), when known
    since: float | None = None
    labels: dict[str, str] = attrs.Factory(dict)
    meters: dict[str, list[int]] = attrs.Factory(dict)  # name -> [value, maximum]
    reason: str | None = None
    flags: set[str] = attrs.Factory(set)
    #: tasks per display state in this subtree (a task counts itself)
    counts: collections.Counter[str] = attrs.Factory(collections.Counter)

    @property
    def is_task(self) -> bool:
        return self.kind == "task"

    @property
    def ntasks(self) -> int:
        return self.counts.total()

    def busy(self) -> int:
        """Tasks below that are aborted, active or submitted."""
        c = self.counts
        return c["aborted"] + c["active"] + c["submitted"]

    def all_complete(self) -> bool:
        n = self.counts.total()
        return n > 0 and self.counts["complete"] == n


@attrs.frozen
class ViewEvent:
    """A line of the event pane."""

    time: float
    kind: str  # submitted, aborted, zombie, late, server, added, deleted, complete
    path: str
    text: str = ""


@attrs.define(eq=False)
class ViewModel:
    """The tree, per-state task counts, the server state and the latest events."""

    nodes: dict[str, VNode] = attrs.Factory(dict)
    roots: dict[str, VNode] = attrs.Factory(dict)
    counts: collections.Counter[str] = attrs.Factory(collections.Counter)
    server_state: str = "unknown"
    events: collections.deque[ViewEvent] = attrs.Factory(
        lambda: collections.deque(maxlen=EVENT_LINES)
    )
    #: aborted tasks whose reason the view has not been told yet
    missing_reasons: set[str] = attrs.Factory(set)
    #: bumped on every applied change, so a renderer can tell it is stale
    version: int = 0

    # ---------------------------------------------------------------- snapshot

    def apply_snapshot(self, data: Mapping[str, Any], now: float, path: str | None = None) -> None:
        """Replace everything with a snapshot: a bunch dump, or a node dump at ``path``."""
        self.nodes.clear()
        self.roots.clear()
        self.counts.clear()
        self.missing_reasons.clear()
        self.version += 1
        server = data.get("server")
        if isinstance(server, Mapping) and "state" in server:
            self.server_state = str(server["state"])
        # A subtree dump carries no flow clock: the server's clock is the wall clock then.
        clock = _parse_time(data.get("now")) or dt.datetime.fromtimestamp(now)
        if "flows" in data:
            items: Iterable[tuple[str, Mapping[str, Any]]] = (
                ("/" + f["name"], f) for f in data["flows"]
            )
        else:
            items = [(path or "/" + str(data.get("name", "")), data)]
        for node_path, item in items:
            root = self._build(item, node_path, None, now, clock)
            self.roots[root.path] = root
            self.counts.update(root.counts)

    def _build(
        self,
        item: Mapping[str, Any],
        path: str,
        parent: VNode | None,
        now: float,
        clock: dt.datetime | None,
    ) -> VNode:
        kind = str(item.get("kind", "task"))
        node = VNode(path=path, name=path.rsplit("/", 1)[-1], kind=kind, parent=parent)
        node.state = str(item.get("state", "unknown"))
        node.tryno = int(item.get("tryno") or 0)
        node.labels = {lb["name"]: str(lb.get("value", "")) for lb in item.get("labels", ())}
        node.meters = {
            m["name"]: [int(m.get("value", 0)), int(m.get("maximum", 0))]
            for m in item.get("meters", ())
        }
        node.reason = item.get("reason")
        node.flags = set(item.get("flags", ()))
        since = _parse_time(item.get("state_since"))
        if clock is not None and since is not None:
            node.since = now - (clock - since).total_seconds()
        self.nodes[path] = node
        if kind == "task":
            node.counts[node.state] += 1
        for child in item.get("children", ()):
            sub = self._build(child, f"{path}/{child['name']}", node, now, clock)
            node.children[sub.name] = sub
            node.counts.update(sub.counts)
        return node

    # ---------------------------------------------------------------- deltas

    def apply_delta(self, message: Mapping[str, Any], now: float) -> None:
        """Apply a delta stream message (its changes and server state)."""
        for change in message.get("changes", ()):
            self.apply_change(change, now)
        server = message.get("server")
        if isinstance(server, Mapping) and "state" in server:
            self._set_server_state(str(server["state"]), now)

    def apply_change(self, change: Mapping[str, Any], now: float) -> None:
        """Apply one change dict: ``{"path", "kind", "name", "old", "new"}``."""
        kind = change.get("kind")
        path = str(change.get("path", ""))
        new = change.get("new")
        self.version += 1
        if kind == "server":
            self._set_server_state(str(new), now)
            return
        if kind == "node_added":
            self._add(path, str(new or "task"), now)
            return
        if kind == "node_deleted":
            self._delete(path, now)
            return
        node = self.nodes.get(path)
        if node is None:
            return
        if kind == "status":
            self._set_state(node, str(new), now)
        elif kind == "tries":
            node.tryno = int(new or 0)
        elif kind == "label":
            node.labels[str(change.get("name"))] = "" if new is None else str(new)
        elif kind == "meter" and change.get("name") in node.meters:
            node.meters[str(change.get("name"))][0] = int(new or 0)
        elif kind == "flag":
            self._set_flag(node, str(change.get("name")), bool(new), now)
        elif kind == "attribute":
            self._set_attribute(node, str(change.get("name")), new, change.get("old"))
        elif kind == "submission" and isinstance(new, Mapping) and new.get("reason"):
            self.set_reason(path, str(new["reason"]))

    @staticmethod
    def _set_attribute(node: VNode, name: str, new: Any, old: Any) -> None:
        """A label or meter added (``new``: its data) or deleted (``old``)."""
        data = new if isinstance(new, Mapping) else old
        what = data.get("kind") if isinstance(data, Mapping) else None
        if what == "label":
            if new is None:
                node.labels.pop(name, None)
            else:
                node.labels[name] = str(new.get("value", ""))
        elif what == "meter":
            if new is None:
                node.meters.pop(name, None)
            else:
                node.meters[name] = [int(new.get("value") or 0), int(new.get("maximum") or 0)]

    def set_reason(self, path: str, reason: str) -> None:
        """Record why a task aborted (the view asks the server when a delta lacks it)."""
        self.missing_reasons.discard(path)
        node = self.nodes.get(path)
        if node is None or node.reason == reason:
            return
        node.reason = reason
        self.version += 1
        for i, event in enumerate(self.events):
            if event.kind == "aborted" and event.path == path and not event.text:
                self.events[i] = attrs.evolve(event, text=reason)

    def _set_state(self, node: VNode, state: str, now: float) -> None:
        old = node.state
        if old == state:
            return
        node.state = state
        node.since = now
        if node.is_task:
            for n in self._lineage(node):
                n.counts[old] -= 1
                n.counts[state] += 1
            self.counts[old] -= 1
            self.counts[state] += 1
            if state == "submitted":
                self._event(now, "submitted", node.path, f"try {node.tryno}")
            elif state == "aborted":
                node.reason = None
                self.missing_reasons.add(node.path)
                self._event(now, "aborted", node.path)
        elif node.parent is None and state == "complete":
            self._event(now, "complete", node.path)

    def _set_flag(self, node: VNode, flag: str, on: bool, now: float) -> None:
        if on and flag not in node.flags:
            node.flags.add(flag)
            if flag in ("zombie", "late"):
                self._event(now, flag, node.path)
        elif not on:
            node.flags.discard(flag)

    def _set_server_state(self, state: str, now: float) -> None:
        if state != self.server_state:
            self.server_state = state
            self.version += 1
            self._event(now, "server", "", state)

    def _add(self, path: str, kind: str, now: float) -> None:
        if path in self.nodes:
            return
        parent_path, _, name = path.rpartition("/")
        parent = self.nodes.get(parent_path)
        if parent is None and parent_path:
            return  # outside the subtree this view watches
        node = VNode(path=path, name=name, kind=kind, parent=parent, since=now)
        self.nodes[path] = node
        if parent is None:
            self.roots[path] = node
        else:
            parent.children[name] = node
        if node.is_task:
            for n in self._lineage(node):
                n.counts["unknown"] += 1
            self.counts["unknown"] += 1
        if kind == "flow":
            self._event(now, "added", path)

    def _delete(self, path: str, now: float) -> None:
        node = self.nodes.get(path)
        if node is None:
            return
        gone = node.counts
        for anc in self._lineage(node.parent):
            anc.counts.subtract(gone)
        self.counts.subtract(gone)
        for n in list(_walk(node)):
            self.nodes.pop(n.path, None)
            self.missing_reasons.discard(n.path)
        if node.parent is None:
            self.roots.pop(path, None)
        else:
            node.parent.children.pop(node.name, None)
        self._event(now, "deleted", path)

    @staticmethod
    def _lineage(node: VNode | None) -> Iterator[VNode]:
        while node is not None:
            yield node
            node = node.parent

    def _event(self, now: float, kind: str, path: str, text: str = "") -> None:
        self.events.append(ViewEvent(now, kind, path, text))

    # ---------------------------------------------------------------- queries

    def task_count(self) -> int:
        return self.counts.total()

    def count(self, state: str) -> int:
        return self.counts[state]


def _walk(node: VNode) -> Iterator[VNode]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children.values())


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed
