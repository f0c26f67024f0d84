"""Subscriptions: a snapshot of the tree, then every change that follows it.

The server publishes each committed batch of changes once; the hub encodes
each change once and pushes a delta into the bounded buffer of every
subscriber whose path it concerns. Publishing never waits: a subscriber that
falls ``max_buffer`` messages behind is dropped with reason "too slow" and
must subscribe again for a fresh snapshot.

Deltas that a subscriber has not taken yet are merged into one (up to
``MERGE_MAX`` changes): a group commit that ends twenty child commands at
once costs its subscribers one message, not twenty. Applying the merged
delta is the same as applying its parts in order.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import trio

from takler.codec import dump_change as codec_dump_change
from takler.core.change import Change, ChangeKind
from takler.protocol import PROTOCOL_VERSION, TooManyError

log = logging.getLogger("takler.hub")

SnapshotFn = Callable[[str | None], dict[str, Any]]
DumpFn = Callable[[Change], dict[str, Any]]

#: changes a delta waiting in a subscriber's buffer may grow to by merging
MERGE_MAX = 256


def normalize_path(path: str | None) -> str | None:
    """``/f//fam/`` -> ``/f/fam``; ``None``, ``""`` and ``/`` mean the whole bunch."""
    if path is None:
        return None
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts) if parts else None


class Subscription:
    """An async iterator of stream message dicts: the snapshot, then deltas.

    Iteration ends after a ``closed`` message (dropped by the server) or
    when :meth:`close` is called.
    """

    def __init__(self, hub: Hub, sid: int, path: str | None, snapshot: dict[str, Any]) -> None:
        self.id = sid
        self.path = path
        self.closed_reason: str | None = None
        self._hub = hub
        self._seq = 0
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._done = False
        self._push({"type": "snapshot", "data": snapshot})

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.path or '/'}>"

    def concerns(self, change_path: str) -> bool:
        """Whether a change at ``change_path`` belongs in this subscription."""
        if self.path is None:
            return True
        if change_path == self.path or change_path.startswith(self.path + "/"):
            return True
        return change_path == "/"

    def _push(self, message: dict[str, Any]) -> None:
        msg = {"v": PROTOCOL_VERSION, "type": message.pop("type"), "subscription": self.id}
        if msg["type"] != "closed":
            msg["seq"] = self._seq
            self._seq += 1
        msg.update(message)
        self._buffer.append(msg)
        self._lot.unpark_all()

    def _offer(self, message: dict[str, Any], max_buffer: int) -> None:
        if self._done:
            return
        buffer = self._buffer
        if buffer:
            last = buffer[-1]
            changes = message["changes"]
            # The consumer has not taken ``last`` yet: it may still grow.
            if last["type"] == "delta" and len(last["changes"]) + len(changes) <= MERGE_MAX:
                last["changes"].extend(changes)
                last["server"] = message["server"]
                return
        if len(buffer) >= max_buffer:
            # Queued deltas are useless without the ones that cannot follow.
            self._buffer.clear()
            self._end("too slow")
            return
        self._push(message)

    def _end(self, reason: str | None) -> None:
        if self._done:
            return
        self._done = True
        self.closed_reason = reason
        if reason is not None:
            self._push({"type": "closed", "reason": reason})
        self._lot.unpark_all()
        self._hub._forget(self)

    def close(self) -> None:
        """Stop the subscription (the client unsubscribed); idempotent."""
        self._buffer.clear()
        self._end(None)

    def pending(self) -> int:
        """Messages waiting to be taken."""
        return len(self._buffer)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while not self._buffer:
            if self._done:
                raise StopAsyncIteration
            await self._lot.park()
        return self._buffer.popleft()


class Hub:
    """Fans committed changes out to subscribers.

    Args:
        snapshot_fn: ``snapshot_fn(path)`` dumps the subtree at ``path`` (the
            whole bunch for ``None``); raises ``NodeNotFoundError``.
        max_buffer: messages a subscriber may fall behind before it is dropped.
        max_subscribers: subscriptions open at once, server-wide.
        dump_change: a change as data (default: the codec's).
    """

    def __init__(
        self,
        snapshot_fn: SnapshotFn,
        max_buffer: int = 1000,
        max_subscribers: int = 1000,
        dump_change: DumpFn | None = None,
    ) -> None:
        self._snapshot = snapshot_fn
        self.max_buffer = max_buffer
        self.max_subscribers = max_subscribers
        self._dump = dump_change or codec_dump_change
        self._ids = itertools.count(1)
        self._subs: dict[int, Subscription] = {}
        self._server_state: str | None = None

    def __len__(self) -> int:
        return len(self._subs)

    def open_subscription(self, path: str | None = None) -> Subscription:
        """Subscribe to ``path`` (``None``: everything).

        The snapshot is taken and the subscriber registered with no
        checkpoint between, so no change is missed or seen twice.

        Raises:
            NodeNotFoundError: no node at ``path``.
            TooManyError: ``max_subscribers`` are open.
        """
        if len(self._subs) >= self.max_subscribers:
            raise TooManyError(f"the server has {self.max_subscribers} subscriptions open")
        path = normalize_path(path)
        snapshot = self._snapshot(path)
        sub = Subscription(self, next(self._ids), path, snapshot)
        self._subs[sub.id] = sub
        return sub

    def _forget(self, sub: Subscription) -> None:
        self._subs.pop(sub.id, None)

    def publish(self, changes: Iterable[Change], server_state: str) -> None:
        """Queue a delta for every subscriber the changes concern. Never blocks.

        A server state different from the last one published reaches every
        subscriber, even with no change of its own.
        """
        if not self._subs:
            # Nobody listens: no need to format (a 100k-task load is 100k changes).
            self._server_state = server_state
            return
        dumped = [(change.path, change.kind, self._dump(change)) for change in changes]
        state_changed = server_state != self._server_state
        self._server_state = server_state
        server = {"state": server_state}
        for sub in list(self._subs.values()):
            if sub.path is None:
                mine = [data for _, _, data in dumped]
            else:
                mine = [
                    data
                    for path, kind, data in dumped
                    if sub.concerns(path)
                    or (kind is ChangeKind.node_deleted and sub.path.startswith(path + "/"))
                ]
            if mine or state_changed:
                sub._offer({"type": "delta", "changes": mine, "server": server}, self.max_buffer)

    def close_all(self, reason: str = "server shutdown") -> None:
        """End every subscription with a ``closed`` message after what is queued."""
        for sub in list(self._subs.values()):
            sub._end(reason)
