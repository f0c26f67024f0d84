import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from takler.core.calendar import DateValue, to_yyyymmdd
from takler.core.errors import RepeatError
from takler.core.repeat import (
    REPEAT_KINDS,
    Repeat,
    RepeatDate,
    RepeatDateList,
    RepeatDay,
    RepeatEnumerated,
    RepeatInteger,
    RepeatString,
    parse_repeat,
)


def run_to_expiry(repeat: Repeat) -> list[int | str]:
    """Every value the repeat takes, checking that it expires on the last one."""
    seen = [repeat.value]
    while repeat.advance():
        seen.append(repeat.value)
    assert repeat.expired
    assert repeat.value == seen[-1]
    assert not repeat.advance()  # stays expired on the last value
    assert repeat.value == seen[-1]
    return seen


def test_integer_to_expiry():
    r = parse_repeat("integer N 1 10 3")
    assert isinstance(r, RepeatInteger)
    assert run_to_expiry(r) == [1, 4, 7, 10]
    assert r.expr_value() == 10
    r.reset()
    assert (r.index, r.value, r.expired) == (0, 1, False)


def test_integer_negative_step_and_default_step():
    assert run_to_expiry(parse_repeat("integer N 5 1 -2")) == [5, 3, 1]
    r = parse_repeat("integer N 0 2")
    assert r.to_text() == "integer N 0 2 1"
    assert run_to_expiry(r) == [0, 1, 2]
    assert run_to_expiry(parse_repeat("integer N 7 7")) == [7]


def test_date_across_month_year_and_leap_day():
    r = parse_repeat("date YMD 20231230 20240302 1")
    assert isinstance(r, RepeatDate)
    values = run_to_expiry(r)
    assert values[:4] == [20231230, 20231231, 20240101, 20240102]
    assert values[-4:] == [20240228, 20240229, 20240301, 20240302]
    assert len(values) == 64
    assert r.count == 64


def test_date_step_stops_before_end_and_counts_down():
    assert run_to_expiry(parse_repeat("date D 20240227 20240305 3")) == [
        20240227,
        20240301,
        20240304,
    ]
    down = parse_repeat("date D 20240302 20240226 -2")
    assert run_to_expiry(down) == [20240302, 20240229, 20240227]
    assert down.start_value == 20240302
    assert down.end_value == 20240227


def test_date_expr_value_and_variables():
    r = parse_repeat("date YMD 20240229 20240310")
    assert r.expr_value() == DateValue(20240229)
    assert r.expr_value() + 1 == DateValue(20240301)
    assert r.variables() == {
        "YMD": "20240229",
        "YMD_YYYY": "2024",
        "YMD_MM": "2",
        "YMD_DD": "29",
        "YMD_DOW": "4",  # thursday
        "YMD_JULIAN": "2460370",
    }
    r.advance()
    assert r.variables()["YMD_DOW"] == "5"
    sunday = parse_repeat("date D 20240303 20240303")
    assert sunday.variables()["D_DOW"] == "0"


def test_datelist():
    r = parse_repeat("datelist YMD 20240110 20230101 20240229")
    assert isinstance(r, RepeatDateList)
    assert run_to_expiry(r) == [20240110, 20230101, 20240229]
    assert r.expr_value() == DateValue(20240229)
    assert r.variables()["YMD_MM"] == "2"
    assert (r.start_value, r.end_value) == (20240110, 20240229)
    r.set_value("20230101")
    assert (r.index, r.value, r.expired) == (1, 20230101, False)


def test_enumerated_and_string():
    e = parse_repeat('enumerated E "first value" 12 -3')
    assert isinstance(e, RepeatEnumerated)
    assert e.expr_value() == 0  # not numeric: the index
    assert e.variables() == {"E": "first value", "E_INDEX": "0"}
    e.advance()
    assert e.expr_value() == 12
    e.advance()
    assert e.expr_value() == -3
    assert not e.advance() and e.expired
    s = parse_repeat("string S a b c")
    assert isinstance(s, RepeatString)
    assert run_to_expiry(s) == ["a", "b", "c"]
    assert s.expr_value() == 2
    assert (s.start_value, s.end_value) == ("a", "c")


def test_day_never_expires():
    d = parse_repeat("day 2")
    assert isinstance(d, RepeatDay)
    assert d.name == "day"
    for _ in range(1000):
        assert d.advance()
    assert not d.expired
    assert d.value == d.expr_value() == 2
    assert d.count is None and d.end_value is None
    assert parse_repeat("day").to_text() == "day 1"
    with pytest.raises(RepeatError, match="no values"):
        d.set_value("3")


def test_set_value():
    r = parse_repeat("integer N 0 20 5")
    r.advance()
    r.advance()
    r.advance()
    r.advance()
    assert not r.advance()
    r.set_value(" 10 ")
    assert (r.index, r.value, r.expired) == (2, 10, False)
    d = parse_repeat("date D 20240101 20240131 2")
    d.set_value("20240115")
    assert d.index == 7
    e = parse_repeat("enumerated E x y")
    e.set_value("y")
    assert e.index == 1


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ("integer N 0 20 5", "12"),  # off the step
        ("integer N 0 20 5", "25"),  # past the end
        ("integer N 0 20 5", "-5"),
        ("integer N 0 20 5", "ten"),
        ("date D 20240101 20240131 2", "20240102"),  # off the step
        ("date D 20240101 20240131 2", "20240202"),
        ("date D 20240101 20240131 2", "20240230"),  # not a date
        ("datelist D 20240101 20240105", "20240102"),
        ("enumerated E x y", "z"),
        ("string S x y", "0"),
    ],
)
def test_set_value_errors_leave_state_alone(spec, value):
    r = parse_repeat(spec)
    r.advance()
    with pytest.raises(RepeatError, match="is not one of its values"):
        r.set_value(value)
    assert r.index == 1


@pytest.mark.parametrize(
    "text",
    [
        "date YMD 20240101 20241231 1",
        "date YMD 20241231 20240101 -7",
        "datelist D 20240101 20230505",
        "integer I -5 5 2",
        'enumerated E "a b" "c\\"d" "" "back\\\\slash"',
        "string S one two",
        "day 1",
        "day 3",
    ],
)
def test_round_trip(text):
    r = parse_repeat(text)
    again = parse_repeat(r.to_text())
    assert again.same_spec(r)
    assert again.to_text() == r.to_text()
    assert REPEAT_KINDS[r.kind] is type(r)


def test_quoted_values_survive_round_trip():
    r = parse_repeat('enumerated E "a b" "c\\"d" ""')
    assert r.values == ("a b", 'c"d', "")
    assert parse_repeat(r.to_text()).values == r.values


def test_same_spec_ignores_state():
    a, b = parse_repeat("integer N 1 5"), parse_repeat("integer N 1 5")
    a.advance()
    assert a.same_spec(b)
    assert not a.same_spec(parse_repeat("integer M 1 5"))
    assert not a.same_spec(parse_repeat("integer N 1 5 2"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the spec is empty"),
        ("hourly H 1 2", "unknown kind 'hourly'"),
        ("integer N 1", "expected NAME START END [STEP]"),
        ("integer N 1 5 0", "the step must not be zero"),
        ("integer N 1 5 -1", "the step -1 does not lead from start to end"),
        ("integer N one 5", "start 'one' is not an integer"),
        ("integer 9N 1 5", "name '9N' is not a valid variable name"),
        ("integer N-1 1 5", "not a valid variable name"),
        ("date D 20240230 20240301", "start 20240230 is not a real date"),
        ("date D 20240101 2024013", "end 2024013 is not a real date"),
        ("date D 20240101 20240131 0", "the step must not be zero"),
        ("date D 20240131 20240101", "does not lead from start to end"),
        ("datelist D", "at least one date"),
        ("datelist D 20240101 20241301", "date 20241301 is not a real date"),
        ("enumerated E", "at least one value"),
        ("string S", "at least one value"),
        ('string S "open', "No closing quotation"),
        ("day 0", "positive number of days"),
        ("day 1 2", "at most a STEP"),
    ],
)
def test_malformed_repeats_raise(text, problem):
    with pytest.raises(RepeatError) as info:
        parse_repeat(text)
    message = str(info.value)
    assert problem in message
    assert message.startswith(f"bad repeat {text.strip()!r}")


def test_direct_construction_is_validated():
    with pytest.raises(RepeatError, match="bad repeat 'integer N 1 5 0'"):
        RepeatInteger(name="N", start=1, end=5, step=0)
    with pytest.raises(RepeatError, match="index 4 is out of range"):
        RepeatString(name="S", values=("a", "b"), index=4)
    with pytest.raises(RepeatError, match="always 'day'"):
        RepeatDay(name="night")


@st.composite
def integer_repeats(draw):
    start = draw(st.integers(-1000, 1000))
    step = draw(st.integers(1, 12)) * draw(st.sampled_from([1, -1]))
    count = draw(st.integers(1, 40))
    slack = draw(st.integers(0, abs(step) - 1))  # an end that is not on the step
    end = start + step * (count - 1) + (slack if step > 0 else -slack)
    name = draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True))
    expected = list(range(start, end + (1 if step > 0 else -1), step))
    return RepeatInteger(name=name, start=start, end=end, step=step), expected


@st.composite
def date_repeats(draw):
    first = draw(st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)))
    step = draw(st.integers(1, 40)) * draw(st.sampled_from([1, -1]))
    count = draw(st.integers(1, 40))
    slack = draw(st.integers(0, abs(step) - 1))
    last = first + dt.timedelta(days=step * (count - 1) + (slack if step > 0 else -slack))
    expected = [to_yyyymmdd(first + dt.timedelta(days=i * step)) for i in range(count)]
    repeat = RepeatDate(name="YMD", start=to_yyyymmdd(first), end=to_yyyymmdd(last), step=step)
    return repeat, expected


@given(st.one_of(integer_repeats(), date_repeats()))
def test_property_round_trip_and_advance_count(case):
    repeat, expected = case
    assert parse_repeat(repeat.to_text()).same_spec(repeat)
    assert repeat.count == len(expected)
    advances = 0
    while repeat.advance():
        advances += 1
    assert advances + 1 == len(expected)
    assert repeat.value == expected[-1]
    repeat.reset()
    assert repeat.value == expected[0]
    repeat.set_value(str(expected[-1]))
    assert repeat.index == len(expected) - 1
