"""Time dependencies of a node (``time``, ``today``, ``date``, ``day``, ``cron``).

The semantics are ecFlow's. Nothing here reads a clock: ``now`` is always an
argument, a naive ``datetime`` in the flow's clock. Specs are the text after
the keyword in an ecFlow ``.def`` file; ``to_text()`` gives it back in
canonical form, which parses to an equal spec.

``time HH:MM`` | ``time +HH:MM`` | ``time START END STEP`` (``+`` allowed on START)
    ``reset(now, base)`` arms the first slot ``>= now``; when all of today's
    slots have passed, the first slot of tomorrow. The attribute is free once
    ``now`` reaches the armed slot. ``+`` times count from ``base`` (the moment
    the flow was begun or the node requeued; ``now`` when omitted): a relative
    series is ``base + START, base + START + STEP, ... <= base + END``; it never
    rolls to tomorrow, so when all its slots have passed it is free at once.
``today`` (same syntaxes)
    Like ``time``, but when today's slots have all passed at reset it is free
    at once: it never rolls to tomorrow.
``date DD.MM.YYYY``
    Any field may be ``*`` (``1.*.*``, ``*.12.2024``). Free on a matching day.
``day monday`` .. ``day sunday``
    Free on that weekday (case-insensitive).
``cron [-w W,...] [-d D,...] [-m M,...] HH:MM`` (or ``START END STEP``)
    ``-w`` weekdays 0..6 with 0 = sunday, ``nL`` = the last such weekday of
    the month; ``-d`` days of month 1..31, ``L`` = the last day of the month;
    ``-m`` months 1..12. Values within one option OR together, options AND
    together (ecFlow's rule). ``reset`` arms the first matching slot
    ``>= now``. A cron never expires: after each completion the node is
    requeued for the next matching slot. ``+`` is not supported.

Latching: ``is_free(now)`` sets ``free`` the first time it answers True, and
``free`` stays True until ``reset()`` or ``arm()``; ``free_now()`` sets it on
an operator's request. As in ecFlow 5, a ``day``/``date`` that became free
stays free past midnight until the node is requeued. Before its first
``reset`` a time/today/cron attribute holds and has no deadline.

Requeue: after the node completes, ``next_slot_after(now)`` names the slot
to requeue for, or None (the node stays complete): for a ``time``/``today``
series the next slot later than ``now`` on ``now``'s day (or of the relative
series); for a single ``time``/``today`` its armed slot when that is still
ahead today and not yet free (so ``time 10:00`` plus ``time 14:00`` runs
twice, as in ecFlow); for a ``cron`` the next matching slot; for ``date`` and
``day`` None. The model requeues for the earliest of these and calls
``arm(slot)``: free at that slot and not before. ``next_deadline(now)`` is the earliest
moment after ``now`` at which ``is_free`` may turn True, or None.

``late`` lives in :mod:`takler.core.late`; ``Late`` and ``parse_late`` are
also importable from here.
"""

from __future__ import annotations

import abc
import calendar
import datetime as dt
from collections.abc import Callable, Collection, Iterator
from typing import Any, ClassVar

import attrs

from takler.core.errors import StateError, TimeSpecError

_STATE = {"state": True}  # marks a field as run-time state rather than spec
_WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MINUTES_PER_DAY = 24 * 60


class _SpecProblem(TimeSpecError):
    """A TimeSpecError that also keeps the bare problem, to reword with the input text."""

    def __init__(self, problem: str, message: str | None = None) -> None:
        super().__init__(message or problem)
        self.problem = problem


def _hhmm(token: str, what: str = "") -> int:
    """Minutes in an ``HH:MM`` token; ``what`` names the token in messages."""
    hours, sep, minutes = token.partition(":")
    what = f"{what} " if what else ""
    if not (sep and hours.isdigit() and minutes.isdigit()) or len(hours) > 2 or len(minutes) != 2:
        raise _SpecProblem(f"{what}{token!r} is not HH:MM")
    if int(hours) > 23:
        raise _SpecProblem(f"{what}hour {int(hours)} is out of range 0-23")
    if int(minutes) > 59:
        raise _SpecProblem(f"{what}minute {int(minutes)} is out of range 0-59")
    return int(hours) * 60 + int(minutes)


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


def _dow(day: dt.date) -> int:
    """ecFlow's day of week: 0 = sunday."""
    return (day.weekday() + 1) % 7


def _days_from(
    start: dt.date, months: Collection[int] = (), year: int | None = None
) -> Iterator[dt.date]:
    """Each day from ``start`` on, within ``months`` and ``year`` when given.

    Stops after 400 years, the period of the Gregorian calendar: a pattern
    that has not matched by then never will.
    """
    if year is not None:
        if start.year > year:
            return
        start = max(start, dt.date(year, 1, 1))
    y, m = start.year, start.month
    for _ in range(12 * 400 + 1):
        if y > dt.MAXYEAR or (year is not None and y != year):
            return
        if not months or m in months:
            first = start.day if (y, m) == (start.year, start.month) else 1
            for d in range(first, calendar.monthrange(y, m)[1] + 1):
                yield dt.date(y, m, d)
        y, m = (y, m + 1) if m < 12 else (y + 1, 1)


@attrs.define(eq=False, kw_only=True)
class TimeAttr(abc.ABC):
    """A time dependency of a node; see the module docstring for the semantics."""

    kind: ClassVar[str]
    free: bool = attrs.field(default=False, metadata=_STATE)

    def __attrs_post_init__(self) -> None:
        try:
            self._check()
        except _SpecProblem as e:
            raise _SpecProblem(
                e.problem, f"bad {self.kind} {self.to_text()!r}: {e.problem}"
            ) from None

    @abc.abstractmethod
    def _check(self) -> None:
        """Raise _SpecProblem when the fields do not form a valid spec."""

    @abc.abstractmethod
    def to_text(self) -> str:
        """The spec text after the keyword, in canonical form."""

    @abc.abstractmethod
    def _reached(self, now: dt.datetime) -> bool:
        """Whether the calendar alone frees the attribute at ``now``."""

    def reset(self, now: dt.datetime, base: dt.datetime | None = None) -> None:
        """Clear the latch and arm for the begin or requeue at ``now`` (``base``: see module doc)."""
        self.free = False

    def is_free(self, now: dt.datetime) -> bool:
        """Whether the dependency holds no longer; latches ``free`` when it first answers True."""
        if not self.free and self._reached(now):
            self.free = True
        return self.free

    @abc.abstractmethod
    def next_deadline(self, now: dt.datetime) -> dt.datetime | None:
        """The earliest moment after ``now`` at which ``is_free`` may turn True, or None."""

    def next_slot_after(self, now: dt.datetime) -> dt.datetime | None:
        """The slot to requeue for after the node completed at ``now``, or None."""
        return None

    def arm(self, slot: dt.datetime) -> None:
        """Hold until ``slot`` (one returned by ``next_slot_after``), then free."""
        raise StateError(f"{self.kind} {self.to_text()} has no time slots to arm")

    def free_now(self) -> None:
        """The operator's free-dep: free until the next reset or arm."""
        self.free = True

    def same_spec(self, other: object) -> bool:
        """Whether ``other`` is the same kind with the same spec (state ignored)."""
        return type(other) is type(self) and all(
            getattr(self, f.name) == getattr(other, f.name)
            for f in attrs.fields(type(self))
            if not f.metadata.get("state")
        )


@attrs.define(eq=False, kw_only=True)
class _Series(TimeAttr):
    """A single time or a ``START END STEP`` series, in minutes (after midnight or ``base``)."""

    start: int
    end: int | None = None
    step: int | None = None
    relative: bool = False
    slot: dt.datetime | None = attrs.field(default=None, metadata=_STATE)
    base: dt.datetime | None = attrs.field(default=None, metadata=_STATE)

    def _check(self) -> None:
        for what, value in (("start", self.start), ("end", self.end)):
            if value is not None and not 0 <= value < _MINUTES_PER_DAY:
                raise _SpecProblem(f"{what} must be between 00:00 and 23:59")
        if (self.end is None) != (self.step is None):
            raise _SpecProblem("a series needs both an end and an increment")
        if self.end is not None and self.end < self.start:
            raise _SpecProblem(f"end {_fmt(self.end)} is before start {_fmt(self.start)}")
        if self.step is not None and not 0 < self.step < _MINUTES_PER_DAY:
            raise _SpecProblem("the increment must be between 00:01 and 23:59")

    def to_text(self) -> str:
        text = ("+" if self.relative else "") + _fmt(self.start)
        if self.end is not None and self.step is not None:
            text += f" {_fmt(self.end)} {_fmt(self.step)}"
        return text

    def _offsets(self) -> range:
        if self.end is None or self.step is None:
            return range(self.start, self.start + 1)
        return range(self.start, self.end + 1, self.step)

    def _slots_on(self, day: dt.date) -> list[dt.datetime]:
        return [_midnight(day) + dt.timedelta(minutes=m) for m in self._offsets()]

    def _relative_slots(self) -> list[dt.datetime]:
        if self.base is None:
            return []
        return [self.base + dt.timedelta(minutes=m) for m in self._offsets()]

    def _reached(self, now: dt.datetime) -> bool:
        return self.slot is not None and now >= self.slot

    def next_deadline(self, now: dt.datetime) -> dt.datetime | None:
        if self.free or self.slot is None or now >= self.slot:
            return None
        return self.slot

    def arm(self, slot: dt.datetime) -> None:
        self.slot = slot
        self.free = False


@attrs.define(eq=False, kw_only=True)
class _DailySeries(_Series):
    """What ``time`` and ``today`` share; they differ only when today's slots have passed."""

    _rolls_over: ClassVar[bool]

    def reset(self, now: dt.datetime, base: dt.datetime | None = None) -> None:
        self.free = False
        self.base = (base or now) if self.relative else None
        slots = self._relative_slots() if self.relative else self._slots_on(now.date())
        later = [s for s in slots if s >= now]
        if later:
            self.slot = later[0]
        elif self._rolls_over and not self.relative:
            self.slot = self._slots_on(now.date() + dt.timedelta(days=1))[0]
        else:
            self.slot = slots[-1]  # already passed: free at once

    def next_slot_after(self, now: dt.datetime) -> dt.datetime | None:
        if self.step is None:
            slot = self.slot
            if self.free or slot is None or slot <= now:
                return None
            return slot if self.relative or slot.date() == now.date() else None
        slots = self._relative_slots() if self.relative else self._slots_on(now.date())
        return next((s for s in slots if s > now), None)


@attrs.define(eq=False, kw_only=True)
class Time(_DailySeries):
    """``time``: when today's slots have passed, the first slot tomorrow."""

    kind: ClassVar[str] = "time"
    _rolls_over: ClassVar[bool] = True


@attrs.define(eq=False, kw_only=True)
class Today(_DailySeries):
    """``today``: when today's slots have passed, free at once."""

    kind: ClassVar[str] = "today"
    _rolls_over: ClassVar[bool] = False


@attrs.define(eq=False, kw_only=True)
class Cron(_Series):
    """``cron``: the series on every day that matches all of ``-w``, ``-d``, ``-m``."""

    kind: ClassVar[str] = "cron"
    weekdays: tuple[int, ...] = ()
    last_weekdays: tuple[int, ...] = ()
    days: tuple[int, ...] = ()
    last_day: bool = False
    months: tuple[int, ...] = ()

    def _check(self) -> None:
        super()._check()
        if self.relative:
            raise _SpecProblem("relative '+' times are not supported in a cron")
        for what, values, low, high in (
            ("weekday", self.weekdays + self.last_weekdays, 0, 6),
            ("day of month", self.days, 1, 31),
            ("month", self.months, 1, 12),
        ):
            for v in values:
                if not low <= v <= high:
                    raise _SpecProblem(f"{what} {v} is out of range {low}-{high}")
        if set(self.weekdays) & set(self.last_weekdays):
            raise _SpecProblem("a weekday is given both plain and with L")
        if not any(self._day_matches(d) for d in _days_from(dt.date(2000, 1, 1), self.months)):
            raise _SpecProblem("no day ever matches these options")

    def to_text(self) -> str:
        parts = []
        if self.weekdays or self.last_weekdays:
            w = [str(v) for v in self.weekdays] + [f"{v}L" for v in self.last_weekdays]
            parts.append("-w " + ",".join(w))
        if self.days or self.last_day:
            parts.append("-d " + ",".join([str(v) for v in self.days] + ["L"] * self.last_day))
        if self.months:
            parts.append("-m " + ",".join(str(v) for v in self.months))
        return " ".join([*parts, super().to_text()])

    def _day_matches(self, day: dt.date) -> bool:
        if self.months and day.month not in self.months:
            return False
        month_end = calendar.monthrange(day.year, day.month)[1]
        if self.days or self.last_day:
            if day.day not in self.days and not (self.last_day and day.day == month_end):
                return False
        if self.weekdays or self.last_weekdays:
            dow = _dow(day)
            last = dow in self.last_weekdays and day.day + 7 > month_end
            if dow not in self.weekdays and not last:
                return False
        return True

    def _first_slot(self, now: dt.datetime, after: bool) -> dt.datetime | None:
        for day in _days_from(now.date(), self.months):
            if self._day_matches(day):
                for slot in self._slots_on(day):
                    if slot > now or (slot == now and not after):
                        return slot
        return None

    def reset(self, now: dt.datetime, base: dt.datetime | None = None) -> None:
        self.free = False
        self.slot = self._first_slot(now, after=False)

    def next_slot_after(self, now: dt.datetime) -> dt.datetime | None:
        return self._first_slot(now, after=True)


@attrs.define(eq=False, kw_only=True)
class Date(TimeAttr):
    """``date DD.MM.YYYY``: None in a field is ecFlow's ``*`` wildcard."""

    kind: ClassVar[str] = "date"
    day: int | None = None
    month: int | None = None
    year: int | None = None

    def _check(self) -> None:
        if self.day is not None and not 1 <= self.day <= 31:
            raise _SpecProblem(f"day {self.day} is out of range 1-31")
        if self.month is not None and not 1 <= self.month <= 12:
            raise _SpecProblem(f"month {self.month} is out of range 1-12")
        if self.year is not None and not 1 <= self.year <= dt.MAXYEAR:
            raise _SpecProblem(f"year {self.year} is out of range 1-{dt.MAXYEAR}")
        if self.day is not None and self.month is not None:
            # 2000 is a leap year, so 29.2.* stays allowed.
            if self.day > calendar.monthrange(self.year or 2000, self.month)[1]:
                raise _SpecProblem("no such day in that month")

    def to_text(self) -> str:
        return ".".join("*" if v is None else str(v) for v in (self.day, self.month, self.year))

    def _matches(self, day: dt.date) -> bool:
        return all(
            want is None or want == got
            for want, got in ((self.day, day.day), (self.month, day.month), (self.year, day.year))
        )

    def _reached(self, now: dt.datetime) -> bool:
        return self._matches(now.date())

    def next_deadline(self, now: dt.datetime) -> dt.datetime | None:
        if self.free or self._reached(now):
            return None
        months = () if self.month is None else (self.month,)
        start = now.date() + dt.timedelta(days=1)
        match = next((d for d in _days_from(start, months, self.year) if self._matches(d)), None)
        return None if match is None else _midnight(match)


@attrs.define(eq=False, kw_only=True)
class Day(TimeAttr):
    """``day NAME``: ``weekday`` is 0 = sunday .. 6 = saturday."""

    kind: ClassVar[str] = "day"
    weekday: int

    def _check(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise _SpecProblem(f"weekday {self.weekday} is out of range 0-6")

    def to_text(self) -> str:
        return _WEEKDAYS[self.weekday] if 0 <= self.weekday <= 6 else str(self.weekday)

    def _reached(self, now: dt.datetime) -> bool:
        return _dow(now.date()) == self.weekday

    def next_deadline(self, now: dt.datetime) -> dt.datetime | None:
        if self.free or self._reached(now):
            return None
        ahead = (self.weekday - _dow(now.date())) % 7
        return _midnight(now.date() + dt.timedelta(days=ahead))


@attrs.frozen
class _SeriesSpec:
    start: int
    end: int | None = None
    step: int | None = None
    relative: bool = False


def _parse_series(tokens: list[str]) -> _SeriesSpec:
    if len(tokens) not in (1, 3):
        raise _SpecProblem(f"expected HH:MM or START END INCREMENT, found {len(tokens)} words")
    relative = tokens[0].startswith("+")
    start = _hhmm(tokens[0].removeprefix("+"), "start" if len(tokens) == 3 else "")
    if len(tokens) == 1:
        return _SeriesSpec(start, relative=relative)
    for token in tokens[1:]:
        if token.startswith("+"):
            raise _SpecProblem(f"only the start may be relative, found {token!r}")
    return _SeriesSpec(start, _hhmm(tokens[1], "end"), _hhmm(tokens[2], "increment"), relative)


def _parse_date(tokens: list[str]) -> Date:
    fields = tokens[0].split(".") if len(tokens) == 1 else []
    if len(fields) != 3:
        raise _SpecProblem("expected DD.MM.YYYY (any field may be *)")
    values: list[int | None] = []
    for name, field in zip(("day", "month", "year"), fields, strict=True):
        if field == "*":
            values.append(None)
        elif field.isdigit() and (name != "year" or len(field) == 4):
            values.append(int(field))
        else:
            raise _SpecProblem(
                f"{name} {field!r} is not a number or *"
                + (" of four digits" if name == "year" else "")
            )
    day, month, year = values
    if None not in values:
        try:
            dt.date(year, month, day)  # type: ignore[arg-type]
        except ValueError as e:
            raise _SpecProblem(f"not a real date ({e})") from None
    return Date(day=day, month=month, year=year)


def _parse_day(tokens: list[str]) -> Day:
    name = tokens[0].lower() if len(tokens) == 1 else ""
    if name not in _WEEKDAYS:
        raise _SpecProblem("expected one weekday name, monday to sunday")
    return Day(weekday=_WEEKDAYS.index(name))


def _int_list(option: str, text: str) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    """``-w 1,5L`` / ``-d 1,15,L`` / ``-m 1,6``: plain values, ``nL`` values, a bare ``L``."""
    plain, with_l, bare_l = set(), set(), False
    for item in text.split(","):
        if item.isdigit():
            plain.add(int(item))
        elif option == "-d" and item == "L":
            bare_l = True
        elif option == "-w" and item.endswith("L") and item[:-1].isdigit():
            with_l.add(int(item[:-1]))
        else:
            raise _SpecProblem(f"{option} value {item!r} is not a number")
    return tuple(sorted(plain)), tuple(sorted(with_l)), bare_l


def _parse_cron(tokens: list[str]) -> Cron:
    options: dict[str, str] = {}
    while tokens and tokens[0].startswith("-"):
        option = tokens.pop(0)
        if option not in ("-w", "-d", "-m"):
            raise _SpecProblem(f"unknown option {option!r}; expected -w, -d or -m")
        if option in options:
            raise _SpecProblem(f"option {option} is given twice")
        if not tokens:
            raise _SpecProblem(f"option {option} needs a value")
        options[option] = tokens.pop(0)
    if not tokens:
        raise _SpecProblem("a time HH:MM or a series is missing")
    weekdays, last_weekdays, _ = (
        _int_list("-w", options["-w"]) if "-w" in options else ((), (), False)
    )
    days, _, last_day = _int_list("-d", options["-d"]) if "-d" in options else ((), (), False)
    months = _int_list("-m", options["-m"])[0] if "-m" in options else ()
    return Cron(
        weekdays=weekdays,
        last_weekdays=last_weekdays,
        days=days,
        last_day=last_day,
        months=months,
        **attrs.asdict(_parse_series(tokens)),
    )


_PARSERS: dict[str, Callable[[list[str]], TimeAttr]] = {
    "time": lambda tokens: Time(**attrs.asdict(_parse_series(tokens))),
    "today": lambda tokens: Today(**attrs.asdict(_parse_series(tokens))),
    "date": _parse_date,
    "day": _parse_day,
    "cron": _parse_cron,
}

#: The TimeAttr class of each kind, for the codec.
TIME_ATTR_KINDS: dict[str, type[TimeAttr]] = {
    cls.kind: cls for cls in (Time, Today, Date, Day, Cron)
}


def parse_time_attr(keyword: str, text: str) -> TimeAttr:
    """Parse the spec after ``time``, ``today``, ``date``, ``day`` or ``cron``.

    Raises:
        TimeSpecError: unknown keyword or malformed spec; the message names both.
    """
    kind = keyword.strip().lower()
    parser = _PARSERS.get(kind)
    if parser is None:
        raise TimeSpecError(
            f"unknown time attribute {keyword!r}: expected one of {', '.join(_PARSERS)}"
        )
    tokens = text.split()
    try:
        if not tokens:
            raise _SpecProblem("the spec is empty")
        return parser(tokens)
    except _SpecProblem as e:
        raise TimeSpecError(f"bad {kind} {text.strip()!r}: {e.problem}") from None


def __getattr__(name: str) -> Any:
    # takler.core.late builds on the helpers above, so it is imported on first use.
    if name in ("Late", "parse_late"):
        from takler.core import late

        return getattr(late, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
