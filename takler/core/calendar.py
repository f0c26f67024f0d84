"""Calendar arithmetic on ``yyyymmdd`` integers, as ecFlow's date repeats use."""

from __future__ import annotations

import datetime as dt
from functools import total_ordering

import attrs

from takler.core.errors import InvalidValueError


def parse_yyyymmdd(value: int | str) -> dt.date:
    """The date an ``yyyymmdd`` integer names.

    Raises:
        InvalidValueError: not eight digits or not a real date.
    """
    text = str(value).strip()
    if len(text) != 8 or not text.isdigit():
        raise InvalidValueError(f"bad date {value!r}: expected yyyymmdd")
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as e:
        raise InvalidValueError(f"bad date {value!r}: {e}") from None


def to_yyyymmdd(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def julian_day(day: dt.date) -> int:
    """The astronomical Julian day number at noon of ``day`` (ecFlow's ``_JULIAN``)."""
    return day.toordinal() + 1721425


@total_ordering
@attrs.frozen
class DateValue:
    """A ``yyyymmdd`` date in an expression: ``+``/``-`` an integer count days.

    Compares with integers and other dates by its ``yyyymmdd`` value.
    """

    yyyymmdd: int

    @property
    def date(self) -> dt.date:
        return parse_yyyymmdd(self.yyyymmdd)

    def __add__(self, days: object) -> DateValue:
        if isinstance(days, DateValue):
            days = days.yyyymmdd
        if not isinstance(days, int):
            return NotImplemented
        return DateValue(to_yyyymmdd(self.date + dt.timedelta(days=days)))

    __radd__ = __add__

    def __sub__(self, other: object) -> DateValue | int:
        if isinstance(other, DateValue):
            return (self.date - other.date).days
        if not isinstance(other, int):
            return NotImplemented
        return DateValue(to_yyyymmdd(self.date - dt.timedelta(days=other)))

    def __int__(self) -> int:
        return self.yyyymmdd

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DateValue):
            return self.yyyymmdd == other.yyyymmdd
        if isinstance(other, int) and not isinstance(other, bool):
            return self.yyyymmdd == other
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, DateValue):
            return self.yyyymmdd < other.yyyymmdd
        if isinstance(other, int) and not isinstance(other, bool):
            return self.yyyymmdd < other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.yyyymmdd)

    def __str__(self) -> str:
        return str(self.yyyymmdd)
