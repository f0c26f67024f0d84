"""The ``late`` attribute: when a node has been submitted or active for too long.

``late [-s +HH:MM] [-a HH:MM] [-c +HH:MM | -c HH:MM]`` (any non-empty subset)
    Late when submitted for longer than ``-s``; when still queued or submitted
    at time of day ``-a``; when active for longer than ``-c +HH:MM`` or still
    active at time of day ``-c HH:MM``. ``Late`` is a pure query; the model
    keeps the late flag.

Nothing here reads a clock: ``now`` is always an argument, a naive
``datetime`` in the flow's clock.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import attrs

from takler.core.errors import TimeSpecError
from takler.core.status import NodeStatus
from takler.core.timeattr import _MINUTES_PER_DAY, _fmt, _hhmm, _midnight, _SpecProblem

__all__ = ["Late", "parse_late"]


@attrs.frozen(kw_only=True)
class Late:
    """``late``: minutes for ``-s``, ``-a`` (time of day) and ``-c`` (relative or time of day)."""

    kind: ClassVar[str] = "late"
    submitted: int | None = None
    active: int | None = None
    complete: int | None = None
    complete_relative: bool = False

    def __attrs_post_init__(self) -> None:
        values = (self.submitted, self.active, self.complete)
        if all(v is None for v in values):
            problem = "expected at least one of -s, -a, -c"
            raise _SpecProblem(problem, f"bad late '': {problem}")
        if any(v is not None and not 0 <= v < _MINUTES_PER_DAY for v in values):
            problem = "times must be between 00:00 and 23:59"
            raise _SpecProblem(problem, f"bad late {self.to_text()!r}: {problem}")

    def to_text(self) -> str:
        parts = []
        if self.submitted is not None:
            parts.append(f"-s +{_fmt(self.submitted)}")
        if self.active is not None:
            parts.append(f"-a {_fmt(self.active)}")
        if self.complete is not None:
            parts.append(f"-c {'+' if self.complete_relative else ''}{_fmt(self.complete)}")
        return " ".join(parts)

    def _deadlines(
        self,
        now: dt.datetime,
        state: str | NodeStatus,
        submitted_at: dt.datetime | None,
        active_at: dt.datetime | None,
    ) -> list[dt.datetime]:
        """The moments at which the node, staying in ``state``, becomes late."""
        state = str(state)
        out = []
        if state in ("queued", "submitted"):
            if state == "submitted" and self.submitted is not None and submitted_at is not None:
                out.append(submitted_at + dt.timedelta(minutes=self.submitted))
            if self.active is not None:
                out.append(_midnight(now.date()) + dt.timedelta(minutes=self.active))
        elif state == "active" and self.complete is not None:
            if not self.complete_relative:
                out.append(_midnight(now.date()) + dt.timedelta(minutes=self.complete))
            elif active_at is not None:
                out.append(active_at + dt.timedelta(minutes=self.complete))
        return out

    def is_late(
        self,
        now: dt.datetime,
        state: str | NodeStatus,
        submitted_at: dt.datetime | None,
        active_at: dt.datetime | None,
    ) -> bool:
        """Whether a node in ``state`` (a NodeStatus or its name) is late at ``now``."""
        return any(now >= t for t in self._deadlines(now, state, submitted_at, active_at))

    def next_deadline(
        self,
        now: dt.datetime,
        state: str | NodeStatus,
        submitted_at: dt.datetime | None,
        active_at: dt.datetime | None,
    ) -> dt.datetime | None:
        """When the node becomes late if it stays in ``state``; None if it is already late or never will be."""
        deadlines = self._deadlines(now, state, submitted_at, active_at)
        if any(now >= t for t in deadlines):
            return None
        return min(deadlines, default=None)


def parse_late(text: str) -> Late:
    """Parse the spec after ``late``: ``-s +HH:MM``, ``-a HH:MM``, ``-c [+]HH:MM`` in any order.

    Raises:
        TimeSpecError: malformed spec; the message names the problem.
    """
    tokens = text.split()
    found: dict[str, str] = {}
    try:
        if not tokens:
            raise _SpecProblem("expected at least one of -s, -a, -c")
        while tokens:
            option = tokens.pop(0)
            if option not in ("-s", "-a", "-c"):
                raise _SpecProblem(f"unknown option {option!r}; expected -s, -a or -c")
            if option in found:
                raise _SpecProblem(f"option {option} is given twice")
            if not tokens:
                raise _SpecProblem(f"option {option} needs a time")
            found[option] = tokens.pop(0)
        if found.get("-a", "").startswith("+"):
            raise _SpecProblem("-a takes a time of day HH:MM, not a duration")
        minutes = {o: _hhmm(v.removeprefix("+"), o) for o, v in found.items()}
        return Late(
            submitted=minutes.get("-s"),
            active=minutes.get("-a"),
            complete=minutes.get("-c"),
            complete_relative=found.get("-c", "").startswith("+"),
        )
    except _SpecProblem as e:
        raise TimeSpecError(f"bad late {text.strip()!r}: {e.problem}") from None
