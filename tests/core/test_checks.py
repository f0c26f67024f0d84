"""flow.check(): every reference that does not resolve, listed before anything runs."""

from takler.core import Bunch, Flow


def sample() -> Flow:
    flow = Flow("s")
    a = flow.add_task("a")
    a.add_event("ev")
    a.add_meter("m", 0, 5)
    a.add_parameter("V", 1)
    a.add_parameter("W", "text")
    flow.add_limit("L", 2)
    fam = flow.add_family("f")
    fam.add_repeat("integer N 0 2")
    fam.add_limit("M", 1)
    return flow


def test_a_sound_flow_has_no_problems():
    flow = sample()
    t = flow.find_node("f").add_task("t")  # type: ignore[union-attr]
    t.add_trigger(
        "../a == complete and ../a:ev and ../a:m > 2 and ../a:V == 1 and /s/f:N == 1"
        " and /s:L < 2 and ../a:TAKLER_TRYNO == 0"
    )
    t.add_complete("./t == complete")
    t.add_in_limit("L")
    t.add_in_limit("/s/f:M")
    t.add_in_limit(".:M")
    assert flow.check() == []
    Bunch().add_flow(flow)
    assert flow.check() == []


def test_every_unresolved_reference_is_listed():
    flow = sample()
    t = flow.find_node("f").add_task("t")  # type: ignore[union-attr]
    t.add_trigger("../a:nope == 1 and ../zz == complete and ../a:W == 1 and /other/x == complete")
    t.add_complete("t9 == complete")
    t.add_in_limit("NOPE")
    t.add_in_limit("/s/f:L")
    t.add_in_limit("../g:K")
    expected = [
        "/s/f/t: trigger references ../a:nope, but /s/a has no event, meter, repeat, limit"
        " or variable nope",
        "/s/f/t: trigger references ../zz (/s/zz), which does not exist",
        "/s/f/t: trigger references ../a:W, but its value 'text' is not a number",
        "/s/f/t: trigger references /other/x (/other/x), which does not exist",
        "/s/f/t: complete references t9 (/s/f/t9), which does not exist",
        "/s/f/t: inlimit NOPE names no limit",
        "/s/f/t: inlimit /s/f:L names no limit",
        "/s/f/t: inlimit ../g:K names no limit",
    ]
    assert flow.check() == expected
    Bunch().add_flow(flow)
    assert flow.check() == expected


def test_references_to_another_flow_resolve_once_both_are_loaded():
    flow = Flow("s")
    t = flow.add_task("t")
    t.add_trigger("/other/x == complete")
    assert len(flow.check()) == 1
    bunch = Bunch()
    bunch.add_flow(flow)
    other = Flow("other")
    other.add_task("x")
    bunch.add_flow(other)
    assert flow.check() == []


def test_check_changes_nothing():
    flow = sample()
    t = flow.add_task("t")
    t.add_trigger("a:ev")
    before = (t.state, flow.state, dict(flow.limits["L"].holders), t.trigger)
    flow.check()
    assert (t.state, flow.state, dict(flow.limits["L"].holders), t.trigger) == before
