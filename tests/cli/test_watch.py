"""The live loop: messages in, throttled frames out (Trio's mock clock, no real waiting)."""

from __future__ import annotations

import io
from typing import Any

import pytest
import trio
import trio.testing
from rich.console import Console

from takler_cli.watch import FRAME, StreamClosed, watch_stream

TITLE = "frame-marker"


def snapshot() -> dict[str, Any]:
    tasks = [{"kind": "task", "name": f"t{i}", "state": "queued", "tryno": 0} for i in range(3)]
    flow = {"kind": "flow", "name": "f", "state": "queued", "children": tasks}
    return {"type": "snapshot", "data": {"flows": [flow], "server": {"state": "running"}}}


def delta(path: str, old: str, new: str) -> dict[str, Any]:
    change = {"path": path, "kind": "status", "name": None, "old": old, "new": new}
    return {"type": "delta", "changes": [change], "server": {"state": "running"}}


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100, height=30, color_system=None)


async def test_once_draws_the_snapshot_and_returns() -> None:
    console = terminal()
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    await send.send(snapshot())
    model = await watch_stream(receive, console, title=TITLE, once=True)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert model.count("queued") == 3
    assert TITLE in out and "t2" in out and "queued" in out


class Screen(io.StringIO):
    """A terminal that notes the (Trio) time ``marker`` first reaches it."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.seen_at: float | None = None

    def write(self, text: str) -> int:
        if self.seen_at is None and self.marker in text:
            self.seen_at = trio.current_time()
        return super().write(text)


async def test_a_change_reaches_the_screen_within_a_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    screen = Screen("/f/t1")
    console = Console(file=screen, force_terminal=True, width=100, height=30, color_system=None)
    send, receive = trio.open_memory_channel[dict[str, Any]](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: watch_stream(receive, console, title=TITLE))
        await send.send(snapshot())
        await trio.sleep(1.5)  # a frame and a tick later, the screen is idle
        sent_at = trio.current_time()
        await send.send(delta("/f/t1", "queued", "aborted"))
        await trio.sleep(FRAME * 4)
        nursery.cancel_scope.cancel()
    assert screen.seen_at is not None
    assert screen.seen_at - sent_at <= FRAME


async def test_a_burst_of_deltas_costs_few_frames(autojump_clock: trio.testing.MockClock) -> None:
    console = terminal()
    send, receive = trio.open_memory_channel[dict[str, Any]](1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: watch_stream(receive, console, title=TITLE))
        await send.send(snapshot())
        await trio.sleep(0.5)
        console.file.truncate(0)  # type: ignore[attr-defined]
        console.file.seek(0)  # type: ignore[attr-defined]
        state = "queued"
        for i in range(300):
            new = "active" if i % 2 == 0 else "queued"
            await send.send(delta("/f/t0", state, new))
            state = new
        await trio.sleep(FRAME * 3)
        frames = console.file.getvalue().count(TITLE)  # type: ignore[attr-defined]
        assert 1 <= frames <= 3
        nursery.cancel_scope.cancel()


async def test_abort_reasons_are_asked_for_once(autojump_clock: trio.testing.MockClock) -> None:
    console = terminal()
    asked: list[str] = []

    async def lookup(path: str) -> str:
        asked.append(path)
        return "exit code 7"

    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: watch_stream(receive, console, reason_lookup=lookup))
        await send.send(snapshot())
        await send.send(delta("/f/t1", "queued", "aborted"))
        await trio.sleep(0.5)
        assert asked == ["/f/t1"]
        assert "exit code 7" in console.file.getvalue()  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()


async def test_a_closed_stream_is_reported() -> None:
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    await send.send(snapshot())
    await send.send({"type": "closed", "reason": "server shutdown"})
    with pytest.raises(StreamClosed, match="server shutdown"):
        await watch_stream(receive, terminal())
