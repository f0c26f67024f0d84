"""The async client: commands and subscriptions over one WebSocket connection.

::

    async with open_client("localhost", 5000, token=token) as client:
        print(await client.call("ping"))
        async with client.subscribe("/flow") as sub:
            async for message in sub:  # Snapshot, then Delta...; Closed ends it
                ...

A background task reads every message: responses go to the call with the
same id, stream messages to their subscription.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

from takler.core.errors import TaklerError
from takler.protocol import (
    Closed,
    ProtocolError,
    Request,
    Response,
    StreamMessage,
    decode_message,
    encode,
)

log = logging.getLogger("takler.client")

StreamFactory = Callable[[], Awaitable[trio.abc.Stream]]
_MAX_MESSAGE = 64 << 20  # snapshots of large flows are big
# Bytes per read: the library's 4 KiB would take 400 reads for a 10k-task snapshot.
_RECEIVE_SIZE = 1 << 16


class RemoteError(TaklerError):
    """The server refused a request; ``code`` is its error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnreachableError(TaklerError, ConnectionError):
    """The server could not be reached, or the connection was lost."""

    code = "unreachable"


class _Call:
    __slots__ = ("deadline", "done", "error", "on_ok", "response")

    def __init__(self, on_ok: Callable[[Any], None] | None, deadline: float) -> None:
        self.done = trio.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None
        self.on_ok = on_ok
        #: when :meth:`Client._watch_calls` gives up waiting for the reply
        self.deadline = deadline


class Client:
    """One connection to a server; made by :func:`open_client`."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, timeout: float | None) -> None:
        #: seconds to wait for each reply (``None``: forever)
        self.timeout = timeout
        self._ws = ws
        self._ids = itertools.count(1)
        self._calls: dict[int | str, _Call] = {}
        self._subs: dict[int, Subscription] = {}
        self._lost: str | None = None

    async def call(self, command: str, /, **args: Any) -> Any:
        """Run ``command`` with ``args`` on the server; returns its result.

        Raises:
            RemoteError: the server refused (``.code``, ``.message``).
            UnreachableError: the connection is lost, or no reply in ``timeout``.
        """
        return await self.request(command, args)

    async def request(self, command: str, args: dict[str, Any], token: str | None = None) -> Any:
        """Like :meth:`call` with the arguments as a dict (and a per-request token)."""
        return await self._request(command, args, token, None)

    async def _request(
        self,
        command: str,
        args: dict[str, Any],
        token: str | None,
        on_ok: Callable[[Any], None] | None,
    ) -> Any:
        if self._lost is not None:
            raise UnreachableError(f"connection lost: {self._lost}")
        rid = next(self._ids)
        timeout = self.timeout
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        call = self._calls[rid] = _Call(on_ok, deadline)
        try:
            await self._send(encode(Request(rid, command, args, token)))
            await call.done.wait()  # set by the reply, a lost connection or the watchdog
        finally:
            self._calls.pop(rid, None)
        if call.error is not None:
            raise call.error
        response = call.response
        if response is None:
            raise UnreachableError(f"no reply to {command} within {self.timeout:g} s")
        if not response.ok:
            error = response.error
            raise RemoteError(error.code, error.message) if error else RemoteError("error", "?")
        return response.result

    async def _send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise UnreachableError(f"connection lost: {_describe(exc)}") from None

    async def _watch_calls(self) -> None:
        """End the wait of each call still without a reply at its deadline.

        One task per connection sleeping until the next deadline, rather than
        a cancel scope with a deadline per call: with it, a tenth of the
        client's CPU per ``ping``.
        """
        while True:
            now = trio.current_time()
            # With no call waiting, look again after a timeout: a call made
            # meanwhile has its deadline no earlier.
            wake = now + (self.timeout if self.timeout is not None else 60.0)
            for call in self._calls.values():
                if call.deadline <= now:
                    call.done.set()  # no response: the caller reports the timeout
                else:
                    wake = min(wake, call.deadline)
            await trio.sleep_until(wake)

    def subscribe(self, path: str | None = None, max_buffer: int = 10000) -> Subscription:
        """Subscribe to the tree at ``path`` (everything for ``None``).

        Use as ``async with client.subscribe(path) as sub: async for msg in sub``;
        leaving the block unsubscribes. Messages are :class:`~takler.protocol.Snapshot`,
        :class:`~takler.protocol.Delta` and a final :class:`~takler.protocol.Closed`.
        A subscriber more than ``max_buffer`` messages behind is closed ("too slow").
        """
        return Subscription(self, path, max_buffer)

    async def _read(self) -> None:
        """Route every incoming message; on loss, fail calls and end subscriptions."""
        reason = "connection closed"
        try:
            while True:
                text = await self._ws.get_message()
                try:
                    message = decode_message(text)
                except ProtocolError as exc:
                    log.warning("ignoring a bad message from the server: %s", exc)
                    continue
                if isinstance(message, Response):
                    self._on_response(message)
                else:
                    sub = self._subs.get(message.subscription)
                    if sub is not None:
                        sub._deliver(message)
        except trio_websocket.ConnectionClosed as exc:
            reason = _describe(exc)
        except Exception as exc:
            log.exception("client reader failed")
            reason = f"client error: {exc}"
        finally:
            self._lost = reason
            for call in self._calls.values():
                call.error = UnreachableError(f"connection lost: {reason}")
                call.done.set()
            for sub in list(self._subs.values()):
                sub._deliver(Closed(sub.id or 0, reason))

    def _on_response(self, response: Response) -> None:
        call = self._calls.get(response.id) if response.id is not None else None
        if call is None:
            log.debug("reply to no pending request: %r", response.id)
            return
        call.response = response
        if response.ok and call.on_ok is not None:
            call.on_ok(response.result)
        call.done.set()


class Subscription:
    """A live view of part of the server's tree; see :meth:`Client.subscribe`."""

    def __init__(self, client: Client, path: str | None, max_buffer: int) -> None:
        self.path = path
        self.id: int | None = None
        self._client = client
        self._max_buffer = max_buffer
        self._buffer: collections.deque[StreamMessage] = collections.deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._ended = False

    async def __aenter__(self) -> Subscription:
        args = {} if self.path is None else {"path": self.path}
        await self._client._request("subscribe", args, None, self._register)
        return self

    def _register(self, result: Any) -> None:
        # Runs in the reader, before it reads the snapshot that follows.
        self.id = result["subscription"]
        self._client._subs[self.id] = self  # type: ignore[index]

    async def __aexit__(self, *exc_info: object) -> None:
        if self.id is None:
            return
        self._client._subs.pop(self.id, None)
        self._ended = True
        if self._client._lost is None:
            with trio.move_on_after(self._client.timeout or 10.0) as scope:
                scope.shield = True
                try:
                    await self._client.call("unsubscribe", subscription=self.id)
                except (RemoteError, UnreachableError):
                    pass

    def _deliver(self, message: StreamMessage) -> None:
        if self._ended:
            return
        if len(self._buffer) >= self._max_buffer:
            self._buffer.clear()
            message = Closed(message.subscription, "too slow")
        if isinstance(message, Closed):
            self._ended = True
            if self.id is not None:
                self._client._subs.pop(self.id, None)
        self._buffer.append(message)
        self._lot.unpark_all()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StreamMessage:
        while not self._buffer:
            if self._ended:
                raise StopAsyncIteration
            await self._lot.park()
        return self._buffer.popleft()


def _describe(exc: trio_websocket.ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "connection closed"
    return f"{reason.code} {reason.reason}" if reason.reason else f"code {reason.code}"


@asynccontextmanager
async def open_client(
    host: str,
    port: int,
    *,
    token: str | None = None,
    cafile: str | None = None,
    tls: bool = False,
    timeout: float | None = 10.0,  # noqa: ASYNC109 (it bounds each reply, not just this call)
    stream_factory: StreamFactory | None = None,
) -> AsyncIterator[Client]:
    """Connect to the server at ``host:port``; closes the connection on exit.

    Args:
        token: sent as ``Authorization: Bearer``.
        cafile: CA bundle to verify the server's certificate (implies TLS).
        tls: speak TLS, trusting the system's CAs unless ``cafile`` is given.
        timeout: seconds for connecting and for each reply (``None``: forever).
        stream_factory: makes the byte stream instead of a TCP connection (tests).

    Raises:
        UnreachableError: cannot connect, or the handshake fails.
    """
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    context = _ssl_context(cafile) if (cafile or tls) else None
    where = f"{host}:{port}"
    try:
        async with trio.open_nursery() as nursery:
            ws, stream = await _connect(
                nursery, host, port, headers, context, timeout, stream_factory
            )
            client = Client(ws, timeout)
            nursery.start_soon(client._read)
            nursery.start_soon(client._watch_calls)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(timeout or 10.0):
                        await ws.aclose()
                    await trio.aclose_forcefully(stream)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        if isinstance(exc, trio_websocket.ConnectionRejected):
            raise UnreachableError(
                f"{where} refused the WebSocket: HTTP {exc.status_code}"
            ) from None
        raise exc from None


def _ssl_context(cafile: str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UnreachableError(f"cannot load CA file {cafile}: {exc}") from None
    if cafile:
        # Trust anything the file holds, the server's own certificate too (as curl does).
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


async def _open_stream(
    host: str, port: int, context: ssl.SSLContext | None, stream_factory: StreamFactory | None
) -> trio.abc.Stream:
    if stream_factory is not None:
        return await stream_factory()
    if context is None:
        return await trio.open_tcp_stream(host, port)
    stream = await trio.open_ssl_over_tcp_stream(
        host, port, ssl_context=context, https_compatible=True
    )
    try:
        await stream.do_handshake()  # fail here, with the reason, not later in the reader
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _connect(
    nursery: trio.Nursery,
    host: str,
    port: int,
    headers: list[tuple[bytes, bytes]] | None,
    context: ssl.SSLContext | None,
    limit: float | None,
    stream_factory: StreamFactory | None,
) -> tuple[trio_websocket.WebSocketConnection, trio.abc.Stream]:
    where = f"{host}:{port}"
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(limit if limit is not None else float("inf")):
            stream = watched = _WatchedStream(
                await _open_stream(host, port, context, stream_factory)
            )
            with trio.CancelScope() as handshake:
                nursery.start_soon(_cancel_when_set, watched.ended, handshake)
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    watched,  # type: ignore[arg-type]
                    where,
                    "/",
                    extra_headers=headers,
                    max_message_size=_MAX_MESSAGE,
                    receive_buffer_size=_RECEIVE_SIZE,
                )
                return ws, stream
        raise UnreachableError(
            f"{where} closed the connection during the WebSocket handshake"
            + ("" if context else " (a TLS port? then pass its CA file)")
        )
    except BaseException as exc:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        if isinstance(exc, trio.TooSlowError):
            raise UnreachableError(f"cannot reach {where}: no answer in {limit:g} s") from None
        if isinstance(exc, OSError | trio.BrokenResourceError | trio_websocket.HandshakeError):
            cause = exc.__cause__ or exc
            detail = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
            raise UnreachableError(f"cannot reach {where}: {detail}") from None
        if isinstance(exc, trio_websocket.ConnectionClosed):
            raise UnreachableError(f"{where} closed the connection: {_describe(exc)}") from None
        raise


class _WatchedStream(trio.abc.Stream):
    """A stream that tells when the peer has closed it."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self.ended = trio.Event()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
