import datetime as dt

import pytest

from takler.core.errors import StateError, TimeSpecError
from takler.core.status import NodeStatus
from takler.core.timeattr import (
    TIME_ATTR_KINDS,
    Cron,
    Date,
    Day,
    Late,
    Time,
    Today,
    parse_late,
    parse_time_attr,
)


def at(day: int, hh: int = 0, mm: int = 0, month: int = 5, year: int = 2024) -> dt.datetime:
    """2024-05-<day> is a convenient month: the 1st is a wednesday."""
    return dt.datetime(year, month, day, hh, mm)


# -- time ---------------------------------------------------------------------------


def test_time_frees_at_slot_and_latches():
    t = parse_time_attr("time", "10:00")
    assert isinstance(t, Time)
    t.reset(at(1, 9, 0))
    assert not t.is_free(at(1, 9, 59))
    assert t.next_deadline(at(1, 9, 0)) == at(1, 10, 0)
    assert t.is_free(at(1, 10, 0))
    assert t.free
    assert t.is_free(at(1, 9, 30))  # latched: an earlier clock does not undo it
    assert t.next_deadline(at(1, 11, 0)) is None
    t.reset(at(1, 9, 0))
    assert not t.free and not t.is_free(at(1, 9, 30))


def test_time_rolls_to_tomorrow_when_passed():
    t = parse_time_attr("time", "10:00")
    t.reset(at(1, 11, 0))
    assert not t.is_free(at(1, 11, 0))
    assert not t.is_free(at(1, 23, 59))
    assert t.next_deadline(at(1, 11, 0)) == at(2, 10, 0)
    assert t.is_free(at(2, 10, 0))


def test_today_frees_at_once_when_passed():
    t = parse_time_attr("today", "10:00")
    assert isinstance(t, Today)
    t.reset(at(1, 11, 0))
    assert t.is_free(at(1, 11, 0))
    assert t.next_deadline(at(1, 11, 0)) is None


def test_today_waits_for_a_later_slot():
    t = parse_time_attr("today", "14:00")
    t.reset(at(1, 11, 0))
    assert not t.is_free(at(1, 13, 59))
    assert t.next_deadline(at(1, 11, 0)) == at(1, 14, 0)
    assert t.is_free(at(1, 14, 0))


def test_relative_time_counts_from_base():
    t = parse_time_attr("time", "+00:30")
    assert t.to_text() == "+00:30"
    t.reset(at(1, 11, 0), base=at(1, 10, 50))
    assert t.next_deadline(at(1, 11, 0)) == at(1, 11, 20)
    assert not t.is_free(at(1, 11, 19))
    assert t.is_free(at(1, 11, 20))


def test_relative_time_base_defaults_to_now_and_does_not_roll():
    t = parse_time_attr("time", "+01:00")
    t.reset(at(1, 23, 30))
    assert t.next_deadline(at(1, 23, 30)) == at(2, 0, 30)
    late = parse_time_attr("time", "+00:10")
    late.reset(at(1, 12, 0), base=at(1, 10, 0))
    assert late.is_free(at(1, 12, 0))  # every relative slot passed: free at once


def test_time_series_first_slot_and_next_slot_after():
    t = parse_time_attr("time", "10:00 12:00 01:00")
    t.reset(at(1, 10, 30))
    assert t.next_deadline(at(1, 10, 30)) == at(1, 11, 0)
    assert t.is_free(at(1, 11, 0))
    # The job ran late: missed slots are skipped.
    slot = t.next_slot_after(at(1, 11, 5))
    assert slot == at(1, 12, 0)
    t.arm(slot)
    assert not t.free
    assert not t.is_free(at(1, 11, 30))
    assert t.next_deadline(at(1, 11, 30)) == at(1, 12, 0)
    assert t.is_free(at(1, 12, 0))
    assert t.next_slot_after(at(1, 12, 5)) is None


def test_time_series_rolled_over_runs_tomorrows_series():
    t = parse_time_attr("time", "10:00 12:00 01:00")
    t.reset(at(1, 13, 0))
    assert t.next_deadline(at(1, 13, 0)) == at(2, 10, 0)
    assert t.next_slot_after(at(2, 10, 5)) == at(2, 11, 0)


def test_today_series_passed_is_free_and_has_no_next_slot():
    t = parse_time_attr("today", "10:00 12:00 01:00")
    t.reset(at(1, 13, 0))
    assert t.is_free(at(1, 13, 0))
    assert t.next_slot_after(at(1, 13, 5)) is None


def test_relative_series_slots_follow_base():
    t = parse_time_attr("time", "+00:00 00:20 00:10")
    t.reset(at(1, 9, 0), base=at(1, 9, 0))
    assert t.is_free(at(1, 9, 0))
    assert t.next_slot_after(at(1, 9, 1)) == at(1, 9, 10)
    t.arm(at(1, 9, 10))
    assert t.next_slot_after(at(1, 9, 15)) == at(1, 9, 20)
    assert t.next_slot_after(at(1, 9, 20)) is None


def test_single_time_has_no_next_slot_once_passed_or_freed():
    t = parse_time_attr("time", "10:00")
    t.reset(at(1, 9, 0))
    assert t.next_slot_after(at(1, 10, 5)) is None
    t.reset(at(1, 9, 0))
    t.free_now()
    assert t.next_slot_after(at(1, 9, 5)) is None
    t.reset(at(1, 11, 0))  # armed for tomorrow: not a requeue of today
    assert t.next_slot_after(at(1, 11, 5)) is None


def test_two_single_times_run_twice_a_day():
    """What the model does: requeue for the earliest next slot, reset all, arm that one."""
    morning, afternoon = parse_time_attr("time", "10:00"), parse_time_attr("time", "14:00")
    times = [morning, afternoon]
    for t in times:
        t.reset(at(1, 9, 0))
    assert any(t.is_free(at(1, 10, 0)) for t in times)
    assert [t.next_slot_after(at(1, 10, 5)) for t in times] == [None, at(1, 14, 0)]
    for t in times:
        t.reset(at(1, 10, 5))
    afternoon.arm(at(1, 14, 0))
    assert not any(t.is_free(at(1, 13, 59)) for t in times)
    assert any(t.is_free(at(1, 14, 0)) for t in times)
    assert [t.next_slot_after(at(1, 14, 5)) for t in times] == [None, None]


def test_series_freed_by_operator_after_its_end_stays_complete():
    t = parse_time_attr("time", "10:00 12:00 01:00")
    t.reset(at(1, 21, 0))
    t.free_now()
    assert t.next_slot_after(at(1, 21, 1)) is None


def test_free_now_latches_until_reset_or_arm():
    t = parse_time_attr("time", "10:00 12:00 01:00")
    t.reset(at(1, 8, 0))
    t.free_now()
    assert t.is_free(at(1, 8, 0))
    assert t.next_deadline(at(1, 8, 0)) is None
    t.arm(at(1, 10, 0))
    assert not t.is_free(at(1, 8, 30))
    t.free_now()
    t.reset(at(1, 8, 0))
    assert not t.is_free(at(1, 8, 30))


def test_not_reset_holds_without_deadline():
    t = parse_time_attr("time", "10:00")
    assert not t.is_free(at(1, 12, 0))
    assert t.next_deadline(at(1, 12, 0)) is None


# -- date and day --------------------------------------------------------------------


def test_date_exact_is_free_all_day():
    d = parse_time_attr("date", "15.05.2024")
    assert isinstance(d, Date)
    assert d.to_text() == "15.5.2024"
    d.reset(at(1))
    assert not d.is_free(at(14, 23, 59))
    assert d.next_deadline(at(1, 12)) == at(15)
    assert d.is_free(at(15, 0, 0))
    d.reset(at(16))
    assert not d.is_free(at(16))
    assert d.next_deadline(at(16)) is None  # never again


def test_date_wildcards():
    first = parse_time_attr("date", "1.*.*")
    assert first.is_free(at(1, 5))
    first.reset(at(2))
    assert not first.is_free(at(2))
    assert first.next_deadline(at(2)) == at(1, month=6)

    december = parse_time_attr("date", "*.12.2024")
    assert december.next_deadline(at(2)) == dt.datetime(2024, 12, 1)
    assert december.is_free(dt.datetime(2024, 12, 31, 23, 59))
    december.reset(dt.datetime(2025, 1, 1))
    assert not december.is_free(dt.datetime(2025, 12, 1))

    leap = parse_time_attr("date", "29.2.*")
    assert leap.next_deadline(at(1)) == dt.datetime(2028, 2, 29)


def test_date_latches_past_midnight_until_reset():
    d = parse_time_attr("date", "1.*.*")
    d.reset(at(1))
    assert d.is_free(at(1, 23, 0))
    assert d.is_free(at(2, 1, 0))
    d.reset(at(2, 1, 0))
    assert not d.is_free(at(2, 1, 0))


def test_day():
    d = parse_time_attr("day", "Friday")
    assert isinstance(d, Day)
    assert d.to_text() == "friday"
    d.reset(at(1))
    assert not d.is_free(at(2, 23, 59))  # thursday
    assert d.next_deadline(at(1, 10)) == at(3)
    assert d.is_free(at(3, 0, 0))
    sunday = parse_time_attr("day", "sunday")
    assert sunday.is_free(at(5))
    assert sunday.next_deadline(at(6)) is None  # latched until requeued
    sunday.reset(at(6))
    assert sunday.next_deadline(at(6)) == at(12)


def test_date_and_day_have_no_slots():
    d = parse_time_attr("day", "monday")
    assert d.next_slot_after(at(6)) is None
    with pytest.raises(StateError):
        d.arm(at(13))


# -- cron ---------------------------------------------------------------------------


def test_cron_daily_never_expires():
    c = parse_time_attr("cron", "23:00")
    assert isinstance(c, Cron)
    c.reset(at(31, 23, 30))
    assert c.next_deadline(at(31, 23, 30)) == at(1, 23, 0, month=6)
    c.reset(at(1, 22, 0))
    assert c.is_free(at(1, 23, 0))
    slot = c.next_slot_after(at(1, 23, 10))
    assert slot == at(2, 23, 0)
    c.arm(slot)
    assert not c.is_free(at(2, 22, 0))
    assert c.is_free(at(2, 23, 0))


def test_cron_series():
    c = parse_time_attr("cron", "00:00 23:00 06:00")
    c.reset(at(1, 7, 0))
    assert c.next_deadline(at(1, 7, 0)) == at(1, 12, 0)
    assert c.next_slot_after(at(1, 18, 1)) == at(2, 0, 0)


def test_cron_weekdays():
    c = parse_time_attr("cron", "-w 0,6 10:00")  # weekends
    c.reset(at(1, 0, 0))
    assert c.next_deadline(at(1)) == at(4, 10, 0)  # saturday
    assert c.next_slot_after(at(4, 10, 0)) == at(5, 10, 0)
    assert c.next_slot_after(at(5, 10, 0)) == at(11, 10, 0)


def test_cron_days_of_month_and_months():
    c = parse_time_attr("cron", "-d 1,15 -m 1,6 12:00")
    c.reset(at(2))
    assert c.next_deadline(at(2)) == at(1, 12, month=6)
    assert c.next_slot_after(at(1, 12, month=6)) == at(15, 12, month=6)
    assert c.next_slot_after(at(15, 12, month=6)) == dt.datetime(2025, 1, 1, 12)


def test_cron_options_and_together():
    c = parse_time_attr("cron", "-w 1 -d 1,2,3,4,5,6,7 09:00")  # first monday of a month
    c.reset(at(1))
    assert c.next_deadline(at(1)) == at(6, 9, 0)
    assert c.next_slot_after(at(6, 9, 0)) == at(3, 9, 0, month=6)


def test_cron_last_day_and_last_weekday():
    last = parse_time_attr("cron", "-d L 18:00")
    last.reset(at(1))
    assert last.next_deadline(at(1)) == at(31, 18)
    assert last.next_slot_after(at(31, 18)) == at(30, 18, month=6)
    last_friday = parse_time_attr("cron", "-w 5L 18:00")
    last_friday.reset(at(1))
    assert last_friday.next_deadline(at(1)) == at(31, 18)
    assert last_friday.next_slot_after(at(31, 18)) == at(28, 18, month=6)


def test_cron_text_is_canonical():
    c = parse_time_attr("cron", "-m 6,1,6 -d L,15,1 -w 5L,0 10:00 20:00 05:00")
    assert c.to_text() == "-w 0,5L -d 1,15,L -m 1,6 10:00 20:00 05:00"


# -- round trip and errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("time", "10:00"),
        ("time", "+00:30"),
        ("time", "+00:00 12:00 00:15"),
        ("time", "06:00 18:00 03:00"),
        ("today", "23:59"),
        ("today", "+01:00 02:00 00:30"),
        ("date", "1.*.*"),
        ("date", "*.12.2024"),
        ("date", "29.2.2024"),
        ("day", "saturday"),
        ("cron", "10:00"),
        ("cron", "-w 0,1,5L -d 1,L -m 2 00:00 23:00 01:00"),
    ],
)
def test_round_trip(keyword, text):
    attr = parse_time_attr(keyword, text)
    assert attr.kind == keyword
    again = parse_time_attr(keyword, attr.to_text())
    assert again.same_spec(attr)
    assert again.to_text() == attr.to_text()
    assert TIME_ATTR_KINDS[keyword] is type(attr)


def test_same_spec_ignores_state():
    a, b = parse_time_attr("time", "10:00"), parse_time_attr("time", "10:00")
    a.reset(at(1))
    a.free_now()
    assert a.same_spec(b)
    assert not a.same_spec(parse_time_attr("today", "10:00"))
    assert not a.same_spec(parse_time_attr("time", "10:01"))


@pytest.mark.parametrize(
    ("keyword", "text", "problem"),
    [
        ("time", "25:00", "hour 25 is out of range"),
        ("time", "10:61", "minute 61 is out of range"),
        ("time", "1000", "is not HH:MM"),
        ("time", "", "empty"),
        ("time", "10:00 12:00", "expected HH:MM or START END INCREMENT"),
        ("time", "12:00 10:00 01:00", "end 10:00 is before start 12:00"),
        ("time", "10:00 12:00 00:00", "increment must be between"),
        ("time", "10:00 +12:00 01:00", "only the start may be relative"),
        ("today", "10:00 12:00 1:0", "increment '1:0' is not HH:MM"),
        ("day", "funday", "expected one weekday name"),
        ("day", "monday tuesday", "expected one weekday name"),
        ("date", "32.1.2024", "not a real date"),
        ("date", "30.2.*", "no such day in that month"),
        ("date", "1.13.*", "month 13 is out of range"),
        ("date", "1.1", "expected DD.MM.YYYY"),
        ("date", "1.1.24", "four digits"),
        ("date", "x.1.2024", "day 'x' is not a number"),
        ("cron", "-x 1 10:00", "unknown option '-x'"),
        ("cron", "-w 7 10:00", "weekday 7 is out of range"),
        ("cron", "-w 1 -w 2 10:00", "option -w is given twice"),
        ("cron", "-d 0 10:00", "day of month 0 is out of range"),
        ("cron", "-m 13 10:00", "month 13 is out of range"),
        ("cron", "-m 1,,2 10:00", "-m value '' is not a number"),
        ("cron", "-d", "option -d needs a value"),
        ("cron", "-d 1", "a time HH:MM or a series is missing"),
        ("cron", "-d 31 -m 4 10:00", "no day ever matches"),
        ("cron", "-w 1,1L 10:00", "both plain and with L"),
        ("cron", "+10:00", "relative '+' times are not supported"),
        ("tomorrow", "10:00", "unknown time attribute 'tomorrow'"),
    ],
)
def test_malformed_specs_raise_time_spec_error(keyword, text, problem):
    with pytest.raises(TimeSpecError) as info:
        parse_time_attr(keyword, text)
    message = str(info.value)
    assert problem in message
    assert keyword in message
    assert "\n" not in message
    if keyword != "tomorrow":
        assert repr(text.strip()) in message


def test_direct_construction_is_validated():
    with pytest.raises(TimeSpecError, match="bad time '12:00 10:00 01:00': end"):
        Time(start=720, end=600, step=60)
    with pytest.raises(TimeSpecError, match="weekday 9"):
        Day(weekday=9)


# -- late -----------------------------------------------------------------------------


def test_late_submitted():
    late = parse_late("-s +00:15")
    submitted = at(1, 10, 0)
    assert not late.is_late(at(1, 10, 14), "submitted", submitted, None)
    assert late.is_late(at(1, 10, 15), "submitted", submitted, None)
    assert late.next_deadline(at(1, 10, 1), "submitted", submitted, None) == at(1, 10, 15)
    assert not late.is_late(at(1, 12, 0), "active", submitted, at(1, 10, 1))
    assert late.next_deadline(at(1, 10, 1), "active", submitted, at(1, 10, 1)) is None


def test_late_active_by_time_of_day():
    late = parse_late("-a 20:00")
    assert not late.is_late(at(1, 19, 59), "queued", None, None)
    assert late.is_late(at(1, 20, 0), NodeStatus.queued, None, None)
    assert late.is_late(at(1, 20, 0), "submitted", at(1, 19, 0), None)
    assert not late.is_late(at(1, 20, 0), "active", at(1, 19, 0), at(1, 19, 30))
    assert late.next_deadline(at(1, 8, 0), "queued", None, None) == at(1, 20, 0)
    assert late.next_deadline(at(1, 21, 0), "queued", None, None) is None  # already late


def test_late_complete_relative_and_absolute():
    relative = parse_late("-c +02:00")
    started = at(1, 10, 0)
    assert not relative.is_late(at(1, 11, 59), "active", None, started)
    assert relative.is_late(at(1, 12, 0), "active", None, started)
    assert relative.next_deadline(at(1, 10, 30), "active", None, started) == at(1, 12, 0)
    assert not relative.is_late(at(1, 23, 0), "complete", None, started)

    absolute = parse_late("-c 18:00")
    assert not absolute.is_late(at(1, 17, 59), "active", None, started)
    assert absolute.is_late(at(1, 18, 0), "active", None, started)
    assert absolute.next_deadline(at(1, 12, 0), "active", None, started) == at(1, 18, 0)
    assert not absolute.is_late(at(1, 19, 0), "queued", None, None)


def test_late_combined_and_round_trip():
    late = parse_late("-c +01:00 -a 20:00 -s 00:15")
    assert late.to_text() == "-s +00:15 -a 20:00 -c +01:00"
    assert parse_late(late.to_text()) == late
    # Submitted at 19:50: late at 20:00 by -a, before -s would make it late at 20:05.
    assert late.next_deadline(at(1, 19, 55), "submitted", at(1, 19, 50), None) == at(1, 20, 0)
    assert Late(complete=60) == parse_late("-c 01:00")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected at least one of -s, -a, -c"),
        ("-x 10:00", "unknown option '-x'"),
        ("-s", "option -s needs a time"),
        ("-s +00:10 -s +00:20", "option -s is given twice"),
        ("-a +10:00", "-a takes a time of day"),
        ("-c 24:00", "-c hour 24 is out of range"),
        ("-s 00:75", "-s minute 75 is out of range"),
        ("10:00", "unknown option '10:00'"),
    ],
)
def test_malformed_late_raises(text, problem):
    with pytest.raises(TimeSpecError) as info:
        parse_late(text)
    assert problem in str(info.value)
    assert str(info.value).startswith("bad late")
