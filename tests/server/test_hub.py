"""The hub: snapshot then deltas, path filtering, slow subscribers, limits."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from takler.core.change import Change, ChangeKind
from takler.core.errors import NodeNotFoundError
from takler.protocol import TooManyError
from takler.server.hub import MERGE_MAX, Hub, normalize_path


def snapshot(path: str | None) -> dict[str, Any]:
    if path is not None and not path.startswith("/f"):
        raise NodeNotFoundError(f"no node {path}")
    return {"path": path}


def meter(path: str, value: int) -> Change:
    return Change(path, ChangeKind.meter, "m", value - 1, value)


def drain(sub: Any) -> list[dict[str, Any]]:
    out = []
    while sub.pending():
        out.append(sub._buffer.popleft())
    return out


async def test_snapshot_first_then_deltas_in_sequence() -> None:
    hub = Hub(snapshot)
    sub = hub.open_subscription("/f")
    hub.publish([meter("/f/t", 1)], "running")
    first = await sub.__anext__()
    assert first == {"v": 1, "type": "snapshot", "subscription": sub.id, "seq": 0,
                     "data": {"path": "/f"}}  # fmt: skip
    second = await sub.__anext__()
    assert second == {
        "v": 1,
        "type": "delta",
        "subscription": sub.id,
        "seq": 1,
        "changes": [{"path": "/f/t", "kind": "meter", "name": "m", "old": 0, "new": 1}],
        "server": {"state": "running"},
    }


async def test_iteration_waits_for_a_publish() -> None:
    hub = Hub(snapshot)
    sub = hub.open_subscription(None)
    got: list[dict[str, Any]] = []

    async def consume() -> None:
        async for message in sub:
            got.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert [m["type"] for m in got] == ["snapshot"]
        hub.publish([meter("/f/t", 1)], "running")
        await trio.testing.wait_all_tasks_blocked()
        assert [m["type"] for m in got] == ["snapshot", "delta"]
        sub.close()
    assert len(hub) == 0


@pytest.mark.parametrize(
    ("path", "change_path", "kind", "delivered"),
    [
        ("/f/fam", "/f/fam", ChangeKind.meter, True),
        ("/f/fam", "/f/fam/t1", ChangeKind.meter, True),
        ("/f/fam", "/f/family", ChangeKind.meter, False),
        ("/f/fam", "/f", ChangeKind.status, False),
        ("/f/fam", "/f", ChangeKind.node_deleted, True),  # an ancestor went away
        ("/f/fam", "/g", ChangeKind.node_deleted, False),
        ("/f/fam", "/", ChangeKind.variable, True),  # server variables reach everyone
        ("/f/fam", "/", ChangeKind.server, True),
        (None, "/g/x", ChangeKind.meter, True),
    ],
)
def test_path_filter(path: str | None, change_path: str, kind: ChangeKind, delivered: bool) -> None:
    hub = Hub(snapshot)
    hub.publish([], "running")
    sub = hub.open_subscription(path)
    drain(sub)
    hub.publish([Change(change_path, kind)], "running")
    assert bool(drain(sub)) is delivered


def test_server_state_change_reaches_everyone_without_changes() -> None:
    hub = Hub(snapshot)
    hub.publish([], "running")
    sub = hub.open_subscription("/f/a")
    drain(sub)
    hub.publish([meter("/f/b", 1)], "running")
    assert drain(sub) == []
    hub.publish([meter("/f/b", 2)], "halted")
    (delta,) = drain(sub)
    assert delta["changes"] == [] and delta["server"] == {"state": "halted"}


def test_each_change_is_dumped_once() -> None:
    calls: list[Change] = []

    def dump(change: Change) -> dict[str, Any]:
        calls.append(change)
        return {"path": change.path}

    hub = Hub(snapshot, dump_change=dump)
    subs = [hub.open_subscription(None) for _ in range(50)]
    hub.publish([meter("/f/t", 1), meter("/f/u", 1)], "running")
    assert len(calls) == 2
    assert all(s.pending() == 2 for s in subs)


def full(value: int) -> list[Change]:
    """A batch too big to merge with anything queued."""
    return [meter(f"/f/t{i}", value) for i in range(MERGE_MAX)]


async def test_slow_subscriber_is_dropped_too_slow() -> None:
    hub = Hub(snapshot, max_buffer=3)
    slow = hub.open_subscription(None)
    fast = hub.open_subscription(None)
    for i in range(1, 6):
        hub.publish(full(i), "running")
        drain(fast)
    assert [m async for m in slow] == [
        {"v": 1, "type": "closed", "subscription": slow.id, "reason": "too slow"}
    ]
    assert slow.closed_reason == "too slow"
    assert len(hub) == 1
    hub.publish([meter("/f/t", 9)], "running")
    assert fast.pending() == 1 and slow.pending() == 0


def test_deltas_not_yet_taken_merge_in_order() -> None:
    hub = Hub(snapshot)
    sub = hub.open_subscription(None)
    drain(sub)
    hub.publish([meter("/f/t", 1)], "running")
    hub.publish([meter("/f/t", 2), meter("/f/u", 1)], "running")
    hub.publish([], "halted")  # a server state alone merges too
    (delta,) = drain(sub)
    assert delta["seq"] == 1
    assert [(c["path"], c["new"]) for c in delta["changes"]] == [
        ("/f/t", 1),
        ("/f/t", 2),
        ("/f/u", 1),
    ]
    assert delta["server"] == {"state": "halted"}
    hub.publish([meter("/f/t", 3)], "halted")
    (after,) = drain(sub)
    assert after["seq"] == 2 and [c["new"] for c in after["changes"]] == [3]


def test_a_merged_delta_stays_within_merge_max() -> None:
    hub = Hub(snapshot)
    sub = hub.open_subscription(None)
    drain(sub)
    hub.publish(full(1)[:-1], "running")
    hub.publish([meter("/f/t", 2)], "running")  # fills it exactly
    hub.publish([meter("/f/t", 3)], "running")  # starts the next
    first, second = drain(sub)
    assert len(first["changes"]) == MERGE_MAX
    assert [c["new"] for c in second["changes"]] == [3]
    assert second["seq"] == first["seq"] + 1


def test_a_delta_taken_is_not_changed_by_later_ones() -> None:
    hub = Hub(snapshot)
    sub = hub.open_subscription(None)
    drain(sub)
    hub.publish([meter("/f/t", 1)], "running")
    (taken,) = drain(sub)
    hub.publish([meter("/f/t", 2)], "running")
    assert len(taken["changes"]) == 1 and sub.pending() == 1


async def test_close_all_delivers_pending_then_closed() -> None:
    hub = Hub(snapshot)
    sub = hub.open_subscription("/f")
    hub.publish([meter("/f/t", 1)], "running")
    hub.close_all("server shutdown")
    assert [m["type"] async for m in sub] == ["snapshot", "delta", "closed"]
    assert len(hub) == 0


async def test_close_ends_iteration_silently() -> None:
    hub = Hub(snapshot)
    sub = hub.open_subscription(None)
    sub.close()
    sub.close()
    assert [m async for m in sub] == []
    hub.publish([meter("/f/t", 1)], "running")
    assert sub.pending() == 0


def test_limits_and_unknown_paths() -> None:
    hub = Hub(snapshot, max_subscribers=2)
    with pytest.raises(NodeNotFoundError):
        hub.open_subscription("/nope")
    assert len(hub) == 0
    hub.open_subscription(None)
    hub.open_subscription("/f/")
    with pytest.raises(TooManyError):
        hub.open_subscription(None)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [(None, None), ("", None), ("/", None), ("/f", "/f"), ("//f//a/", "/f/a"), ("f/a", "/f/a")],
)
def test_normalize_path(raw: str | None, norm: str | None) -> None:
    assert normalize_path(raw) == norm
