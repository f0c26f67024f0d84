"""The live loop: stream messages in, a throttled rich ``Live`` view out.

One task applies messages to the :class:`ViewModel` as they arrive; another
redraws at most every :data:`FRAME` seconds, so a burst of deltas costs one
frame and a lone change reaches the screen within a frame and a render.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

import trio
import typer
from rich.console import Console
from rich.live import Live

from takler_cli.commands import OptPathArg, absolute
from takler_cli.connect import Conn, client_command, unwrap
from takler_cli.output import EXIT_UNREACHABLE, CliExit
from takler_cli.view import render
from takler_cli.viewmodel import ViewModel

#: the shortest time between two frames (seconds)
FRAME = 0.05
#: redraw at least this often, so times in state keep counting
TICK = 1.0

ReasonLookup = Callable[[str], Awaitable[str | None]]


class StreamClosed(Exception):
    """The server dropped the subscription; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Screen:
    """Redraws the view when told that the model changed, at most every FRAME."""

    def __init__(
        self,
        model: ViewModel,
        live: Live | None,
        console: Console,
        title: str,
        progress: bool,
    ) -> None:
        self.model = model
        self.live = live
        self.console = console
        self.title = title
        self.progress = progress
        self.changed = trio.Event()

    def poke(self) -> None:
        self.changed.set()

    def draw(self) -> None:
        renderable = render(
            self.model,
            time.time(),
            height=self.console.size.height - 1,
            title=self.title,
            progress=self.progress,
        )
        if self.live is not None:
            self.live.update(renderable, refresh=True)
        else:
            self.console.print(renderable)

    async def run(self) -> None:
        while True:
            with trio.move_on_after(TICK):
                await self.changed.wait()
            self.changed = trio.Event()
            self.draw()
            # A throttle, not a poll: changes that land meanwhile share the next frame.
            await trio.sleep(FRAME)


async def apply_messages(
    messages: AsyncIterator[Any],
    model: ViewModel,
    on_change: Callable[[], None],
    path: str | None = None,
    *,
    once: bool = False,
) -> None:
    """Feed stream messages into ``model``, calling ``on_change`` after each.

    Returns after the first snapshot when ``once``; otherwise when the stream ends.

    Raises:
        StreamClosed: the server dropped the subscription.
    """
    async for item in messages:
        message = item if isinstance(item, Mapping) else _wire(item)
        kind = message.get("type")
        if kind == "snapshot":
            model.apply_snapshot(message.get("data") or {}, time.time(), path)
        elif kind == "delta":
            model.apply_delta(message, time.time())
        elif kind == "closed":
            raise StreamClosed(str(message.get("reason") or "closed by the server"))
        else:
            continue
        on_change()
        if once and kind == "snapshot":
            return


def _wire(message: Any) -> Mapping[str, Any]:
    """A client's protocol message (Snapshot, Delta, Closed) as its wire dict."""
    from takler.protocol import unstructure

    return unstructure(message)


class _Reasons:
    """Asks, once per abort, why a task aborted (deltas carry the state, not the reason)."""

    def __init__(
        self, model: ViewModel, lookup: ReasonLookup, on_change: Callable[[], None]
    ) -> None:
        self.model = model
        self.lookup = lookup
        self.on_change = on_change
        self.asked: set[str] = set()
        self.send, self.receive = trio.open_memory_channel[str](math.inf)

    def request_missing(self) -> None:
        for task_path in self.model.missing_reasons - self.asked:
            self.asked.add(task_path)
            self.send.send_nowait(task_path)

    async def run(self) -> None:
        async for task_path in self.receive:
            try:
                reason = await self.lookup(task_path)
            except Exception:  # a nicety: a failed lookup only leaves the reason blank
                reason = None
            self.asked.discard(task_path)
            if reason:
                self.model.set_reason(task_path, reason)
                self.on_change()


async def watch_stream(
    messages: AsyncIterator[Any],
    console: Console,
    *,
    path: str | None = None,
    title: str = "",
    progress: bool = False,
    once: bool = False,
    reason_lookup: ReasonLookup | None = None,
    model: ViewModel | None = None,
) -> ViewModel:
    """Show the live view of ``messages`` on ``console`` until the stream ends or is cancelled.

    Args:
        messages: a subscription (snapshot first, then deltas).
        console: where to draw; a non-terminal console gets plain frames.
        path: the subtree the subscription covers (``None``: the whole bunch).
        title: shown in the header.
        progress: show a bar of tasks complete.
        once: draw the first snapshot and return.
        reason_lookup: asked for the reason of each task seen aborting.
        model: the model to fill (a new one by default).

    Returns:
        The model as last drawn.

    Raises:
        StreamClosed: the server dropped the subscription.

    Cancellation stops the view; the last frame stays on the terminal.
    """
    model = model if model is not None else ViewModel()
    if once:
        await apply_messages(messages, model, lambda: None, path, once=True)
        _Screen(model, None, console, title, progress).draw()
        return model
    with Live(
        console=console,
        auto_refresh=False,
        redirect_stdout=False,
        redirect_stderr=False,
        transient=False,
    ) as live:
        screen = _Screen(model, live, console, title, progress)
        reasons = _Reasons(model, reason_lookup, screen.poke) if reason_lookup else None

        def changed() -> None:
            screen.poke()
            if reasons is not None:
                reasons.request_missing()

        closed: StreamClosed | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(screen.run)
                if reasons is not None:
                    nursery.start_soon(reasons.run)
                try:
                    await apply_messages(messages, model, changed, path)
                except StreamClosed as exc:
                    closed = exc  # raised below, not wrapped in the nursery's group
                nursery.cancel_scope.cancel()
        finally:
            screen.draw()
    if closed is not None:
        raise closed
    return model


def register(app: typer.Typer) -> None:
    """Add ``takler watch`` to the typer ``app``."""

    @client_command(app, "watch", help="Live view of the flows (or of PATH); Ctrl-C leaves.")
    def watch(
        conn: Conn,
        path: OptPathArg = None,
        once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    ) -> None:
        node_path = absolute(path) if path else None
        try:
            trio.run(watch_server, conn, node_path, once)
        except BaseException as exc:
            if isinstance(unwrap(exc), KeyboardInterrupt):
                return  # Ctrl-C is how one leaves the view
            raise


async def watch_server(
    conn: Conn, path: str | None, once: bool, console: Console | None = None
) -> None:
    """Subscribe to the server ``conn`` names and show the live view until interrupted."""
    console = console or Console()
    title = conn.where()
    async with conn.open() as client:

        async def reason(task_path: str) -> str | None:
            data = await client.call("show", path=task_path)
            return data.get("reason") if isinstance(data, Mapping) else None

        while True:
            # A subtree snapshot lacks the server state that a whole-bunch one carries.
            state = (await client.call("ping")).get("server_state", "unknown")
            try:
                async with client.subscribe(path) as subscription:
                    await watch_stream(
                        subscription,
                        console,
                        path=path,
                        title=title,
                        once=once,
                        reason_lookup=reason,
                        model=ViewModel(server_state=state),
                    )
            except StreamClosed as exc:
                if exc.reason == "too slow":
                    continue  # dropped for falling behind: start again from a fresh snapshot
                raise CliExit(
                    EXIT_UNREACHABLE, f"takler watch: the server ended the view: {exc.reason}"
                ) from None
            if once:
                return
            raise CliExit(EXIT_UNREACHABLE, f"takler watch: lost the connection to {title}")
