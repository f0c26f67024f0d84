"""Node states and how a container derives its state from its children."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class NodeStatus(enum.Enum):
    """The states of a node, as ecFlow names them."""

    unknown = "unknown"
    complete = "complete"
    queued = "queued"
    submitted = "submitted"
    active = "active"
    suspended = "suspended"
    aborted = "aborted"

    @property
    def rank(self) -> int:
        """Significance when deriving a container's state (higher wins)."""
        return _RANK[self]

    @classmethod
    def parse(cls, text: str) -> NodeStatus:
        try:
            return cls(text.strip().lower())
        except ValueError:
            from takler.core.errors import InvalidValueError

            names = ", ".join(s.value for s in cls)
            raise InvalidValueError(f"unknown state {text!r}; expected one of {names}") from None

    def __str__(self) -> str:
        return self.value

    # Members are singletons compared by identity: hash them as objects (in C)
    # rather than by name in Python (Enum's __hash__). Counts per state are
    # dicts keyed by state, updated on every change.
    __hash__ = object.__hash__


_RANK = {
    NodeStatus.unknown: 0,
    NodeStatus.complete: 1,
    NodeStatus.queued: 2,
    NodeStatus.submitted: 3,
    NodeStatus.active: 4,
    NodeStatus.suspended: 5,
    NodeStatus.aborted: 6,
}

#: States a task can be put in by `force`.
FORCIBLE = frozenset(
    {
        NodeStatus.unknown,
        NodeStatus.queued,
        NodeStatus.submitted,
        NodeStatus.active,
        NodeStatus.complete,
        NodeStatus.aborted,
    }
)

#: States in which a task has a job: submitted or active.
RUNNING = frozenset({NodeStatus.submitted, NodeStatus.active})
#: Statuses of a task with nothing to do now, nor a job: a subtree whose
#: derived state is one of them holds no task with work (Family.live_tasks).
QUIET = frozenset({NodeStatus.unknown, NodeStatus.complete})

#: The integer ecFlow gives each state when a state is used in arithmetic.
ECFLOW_STATE_VALUE = {
    NodeStatus.unknown: 0,
    NodeStatus.complete: 1,
    NodeStatus.queued: 2,
    NodeStatus.aborted: 3,
    NodeStatus.submitted: 4,
    NodeStatus.active: 5,
    NodeStatus.suspended: 6,
}


def derive_status(children: Iterable[NodeStatus]) -> NodeStatus:
    """The state of a container from its children's: most significant wins.

    ``unknown`` only when every child is unknown (or there is none); otherwise
    unknown children are ignored.
    """
    best = NodeStatus.unknown
    for s in children:
        if s.rank > best.rank:
            best = s
    return best


def derive_from_counts(counts: dict[NodeStatus, int]) -> NodeStatus:
    """Like :func:`derive_status` from a count of children per state, in O(states)."""
    best = NodeStatus.unknown
    for s, n in counts.items():
        if n and s.rank > best.rank:
            best = s
    return best
