"""One WebSocket connection: requests answered in order, subscriptions alongside.

Requests are handled one at a time in arrival order (a child ``wait`` runs
on its own, as it may be held for long). Every outgoing message goes through
one writer task, so replies and stream messages never interleave mid-frame
and a cancelled sender never leaves half a frame behind.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio
import trio_websocket

from takler.core.errors import AuthError, NodeNotFoundError, TaklerError
from takler.protocol import (
    COMMAND_ROLES,
    ProtocolError,
    Request,
    Response,
    TooManyError,
    UnknownCommandError,
    check_args,
    child_request,
    decode_request,
    encode,
    unstructure,
)
from takler.server.auth import ANONYMOUS, Identity, audit, check
from takler.server.hub import Subscription

if TYPE_CHECKING:
    from takler.server.service import Service

log = logging.getLogger("takler.service")

_CODE = re.compile(r"[a-z_]{1,32}")


def error_code(exc: BaseException) -> str:
    """The wire code of an exception: a TaklerError's own, else ``server_error``."""
    code = getattr(exc, "code", None) if isinstance(exc, TaklerError) else None
    if not isinstance(code, str) or code == "error" or not _CODE.fullmatch(code):
        return "server_error"
    return code


def one_line(exc: BaseException) -> str:
    """An exception as one short line for an error reply."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


async def close_websocket(
    ws: trio_websocket.WebSocketConnection, code: int, reason: str, wait: float
) -> None:
    """Close with ``code`` and ``reason``, waiting at most ``wait`` seconds for the peer."""
    with trio.move_on_after(wait):
        await ws.aclose(code, reason)


def _is_wait(req: Request) -> bool:
    return req.command == "child" and req.args.get("command") == "wait"


class Session:
    """Serves one accepted WebSocket for a :class:`~takler.server.service.Service`."""

    def __init__(
        self,
        service: Service,
        ws: trio_websocket.WebSocketConnection,
        stream: trio.abc.Stream,
        token: str | None,
        max_message_size: int | None = None,
    ) -> None:
        self.service = service
        self.config = service.config
        self.ws = ws
        self.stream = stream
        # The token, not the identity it gave: a revoked token stops working at once.
        self.token = token
        self.max_message_size = max_message_size or service.config.max_message_size
        self.subs: dict[int, tuple[Subscription, trio.CancelScope]] = {}
        self.waits = 0
        self._waits_done = trio.Event()
        self._waits_done.set()
        self._nursery: trio.Nursery | None = None
        self._outbox: trio.MemorySendChannel[str | None] | None = None
        self._writer: _Writer | None = None
        #: around the read loop; in the service's idle scopes (cancelled by
        #: stop()) only while it waits for a message
        self._reading = trio.CancelScope()
        #: when the read loop last began to wait for a message
        self._waiting_since = trio.current_time()

    def busy(self) -> bool:
        """Subscriptions and held waits keep an otherwise silent connection open."""
        return bool(self.subs) or self.waits > 0

    async def run(self) -> None:
        """Serve until the peer closes, goes idle, or the service stops."""
        send, receive = trio.open_memory_channel[str | None](self.config.outbox_size)
        close: tuple[int, str] | None = None
        async with trio.open_nursery() as nursery:
            self._nursery, self._outbox = nursery, send
            writer = _Writer(self.ws, self.stream, nursery.cancel_scope)
            self._writer = writer
            nursery.start_soon(writer.run, receive)
            nursery.start_soon(self._watchdog)
            try:
                close = await self._read_loop()
                if close is not None:
                    # Closing on our side: the replies due go out first.
                    self._end_subscriptions()
                    with trio.move_on_after(self.config.send_timeout):
                        await self._waits_done.wait()
                        await send.send(None)
                        await writer.finished.wait()
            finally:
                self._end_subscriptions()
                nursery.cancel_scope.cancel()
        if close is not None:
            await close_websocket(self.ws, *close, self.config.handshake_timeout)

    def _end_subscriptions(self) -> None:
        for sub, scope in list(self.subs.values()):
            sub.close()
            scope.cancel()

    async def _send(self, text: str) -> None:
        assert self._outbox is not None and self._writer is not None
        writer = self._writer
        if not self.subs and writer.pending == 0 and writer.since is None:
            # Nothing else is being sent on this connection: skip the hop to the writer.
            await writer.send(text)
            return
        writer.pending += 1
        await self._outbox.send(text)

    async def _read_loop(self) -> tuple[int, str] | None:
        """Answer requests until the peer closes (``None``), goes idle or we stop.

        One cancel scope for the session's life, not one per message (with a
        deadline, the most costly part of a ping after the sockets): stop()
        cancels it while it waits for a message, :meth:`_watchdog` when it has
        waited ``idle_timeout``.
        """
        idle = self.service._idle_scopes
        reading = self._reading
        with reading:
            while not self.service.stopping:
                self._waiting_since = trio.current_time()
                idle.add(reading)
                try:
                    message = await self.ws.get_message()
                except trio_websocket.ConnectionClosed:
                    return None
                finally:
                    idle.discard(reading)
                if reading.cancel_called:
                    # Cancelled just as the message came: answer it, then end.
                    with trio.CancelScope(shield=True):
                        await self._on_message(message)
                    break
                await self._on_message(message)
        if reading.cancel_called and not self.service.stopping:
            return 1000, "idle timeout"
        return 1001, "server shutdown"

    async def _watchdog(self) -> None:
        """End the session when it waits for a message ``idle_timeout`` (unless
        busy), or when one message takes ``send_timeout`` to send: a peer that
        reads nothing. Sleeps until the next such moment, not per message."""
        idle_timeout, send_timeout = self.config.idle_timeout, self.config.send_timeout
        writer = self._writer
        assert writer is not None
        while True:
            now = trio.current_time()
            since = writer.since
            if since is not None and now >= since + send_timeout:
                log.info("dropping a connection that accepts no data")
                writer.session.cancel()  # the stuck send first: half a frame went out
                await trio.aclose_forcefully(self.stream)
                return
            wake = now + send_timeout if since is None else since + send_timeout
            if self._reading in self.service._idle_scopes:  # waiting for a message
                idle_at = self._waiting_since + idle_timeout
                if now >= idle_at:
                    if not self.busy():
                        self._reading.cancel()
                        return
                    idle_at = now + idle_timeout  # subscriptions or waits: look again then
                wake = min(wake, idle_at)
            await trio.sleep_until(wake)

    async def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            reply = Response.failure(None, "bad_request", "binary messages are not accepted")
            await self._send(encode(reply))
            return
        try:
            req = decode_request(message, self.max_message_size)
            if req.command not in COMMAND_ROLES:
                shown = req.command if req.command.isprintable() else repr(req.command)
                raise UnknownCommandError(f"unknown command {shown}", req.id)
        except ProtocolError as exc:
            await self._send(encode(Response.failure(exc.request_id, exc.code, one_line(exc))))
            return
        identity = self.service.auth.identify(self.token if req.token is None else req.token)
        if _is_wait(req):
            assert self._nursery is not None
            self.waits += 1
            if self.waits == 1:
                self._waits_done = trio.Event()
            self._nursery.start_soon(self._answer_wait, req, identity)
        else:
            await self._answer(req, identity)

    async def _answer_wait(self, req: Request, identity: Identity) -> None:
        try:
            await self._answer(req, identity)
        finally:
            self.waits -= 1
            if self.waits == 0:
                self._waits_done.set()

    async def _answer(self, req: Request, identity: Identity) -> None:
        after: Callable[[], None] | None = None
        try:
            check(identity, COMMAND_ROLES[req.command])
            check_args(req.command, req.args, req.id)
            result, after = await self._run(req, identity)
            response = Response.success(req.id, result)
        except Exception as exc:
            code = error_code(exc)
            if code == "server_error":
                log.exception("command %s failed", req.command)
            response = Response.failure(req.id, code, one_line(exc))
        error = response.error
        audit(identity, req.command, req.args, error.code if error else "ok")
        try:
            text = encode(response)
        except (TypeError, ValueError) as exc:
            log.error("reply to %s not encodable: %s", req.command, exc)
            failure = Response.failure(req.id, "server_error", "the reply could not be encoded")
            text, after = encode(failure), None
        await self._send(text)
        if after is not None:
            after()

    async def _run(self, req: Request, identity: Identity) -> tuple[Any, Callable[[], None] | None]:
        """The result, and what to do once the reply is sent."""
        args = req.args
        if req.command == "auth":
            self.token = args["token"]
            identity = self.service.auth.identify(self.token)
            if identity == ANONYMOUS:
                raise AuthError("unknown token")
            return {"name": identity.name, "role": identity.role}, None
        if req.command == "subscribe":
            return self._subscribe(args.get("path"), self.token if req.token is None else req.token)
        if req.command == "unsubscribe":
            entry = self.subs.pop(args["subscription"], None)
            if entry is None:
                raise NodeNotFoundError(f"no subscription {args['subscription']} here")
            entry[0].close()
            entry[1].cancel()
            return None, None
        if req.command == "child":
            body = unstructure(child_request({"v": 1, **args}))
            return await self.service.run_child(body), None
        return await self.service.dispatcher.execute(req.command, args, identity), None

    def _subscribe(self, path: str | None, token: str | None) -> tuple[Any, Callable[[], None]]:
        limit = self.config.max_subscriptions_per_connection
        if len(self.subs) >= limit:
            raise TooManyError(f"at most {limit} subscriptions per connection")
        sub = self.service.hub.open_subscription(path)
        scope = trio.CancelScope()
        self.subs[sub.id] = (sub, scope)
        assert self._nursery is not None
        nursery = self._nursery
        # Stream only after the reply, so the client knows the id first.
        return {"subscription": sub.id}, lambda: nursery.start_soon(
            self._forward, sub, scope, token
        )

    async def _forward(self, sub: Subscription, scope: trio.CancelScope, token: str | None) -> None:
        closed = {"v": 1, "type": "closed", "subscription": sub.id}
        interval = self.config.delta_interval
        with scope:
            try:
                async for message in sub:
                    if self.service.auth.identify(token) == ANONYMOUS:
                        await self._send(encode({**closed, "reason": "token revoked"}))
                        return
                    try:
                        text = encode(message)
                    except (TypeError, ValueError) as exc:
                        log.error("subscription %d: message not encodable: %s", sub.id, exc)
                        await self._send(encode({**closed, "reason": "server error"}))
                        return
                    await self._send(text)
                    if interval > 0:
                        # Changes published meanwhile merge into one delta.
                        await trio.sleep(interval)
            finally:
                sub.close()
                self.subs.pop(sub.id, None)


@attrs.define
class _Writer:
    """Sends on a connection, one message at a time, never half a frame.

    Stream messages and replies queued behind them go through :meth:`run`, the
    connection's writer task; a reply with nothing queued or being sent goes
    out directly through :meth:`send`.
    """

    ws: trio_websocket.WebSocketConnection
    stream: trio.abc.Stream
    session: trio.CancelScope
    finished: trio.Event = attrs.Factory(trio.Event)
    #: messages queued for :meth:`run` and not yet sent
    pending: int = 0
    #: when the message being sent began to go out, None while none is (the
    #: session's watchdog drops a peer that takes ``send_timeout`` to take it)
    since: float | None = None

    async def run(self, outbox: trio.MemoryReceiveChannel[str | None]) -> None:
        """Send until ``None`` (then return) or a failure (then end the session)."""
        async for text in outbox:
            if text is None:
                self.finished.set()
                return
            self.pending -= 1
            if not await self._send(text):
                return

    async def send(self, text: str) -> None:
        """Send ``text`` now; on failure the session ends (the caller is cancelled)."""
        if not await self._send(text):
            await trio.lowlevel.checkpoint()  # the session's scope is cancelled: raises

    async def _send(self, text: str) -> bool:
        self.since = trio.current_time()
        try:
            await self.ws.send_message(text)
            return True
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self.since = None
        self.session.cancel()
        return False
