"""The network edge: one port speaking WebSocket to users and HTTP to jobs.

Each connection starts with an HTTP/1.1 request head. ``POST /child`` gets
one JSON reply; ``GET /`` and ``GET /health`` say who we are; an ``Upgrade:
websocket`` request hands the bytes already read and the rest of the stream
to trio-websocket and a :class:`~takler.server.session.Session`. A bad
connection never takes the service down: its errors are logged and it is
closed.
"""

from __future__ import annotations

import errno
import logging
import math
import ssl
from typing import Any, Protocol

import attrs
import trio
import trio_websocket

import takler
from takler.protocol import ServiceUnavailable, decode_child, unstructure
from takler.server.auth import Auth, Identity
from takler.server.httpwire import (
    HttpError,
    ReplayStream,
    RequestHead,
    parse_head,
    plausible,
    reply_bytes,
)
from takler.server.hub import Hub
from takler.server.session import Session, close_websocket, error_code, one_line

log = logging.getLogger("takler.service")
# Bytes per read (the library reads 4 KiB at a time): a flow sent with load is big.
_RECEIVE_SIZE = 1 << 16


@attrs.frozen
class ServiceConfig:
    """Limits and options of the service (all sizes in bytes, times in seconds)."""

    #: largest message of a connection, and body of a child command
    max_message_size: int = 1 << 20
    #: largest message of a connection that gave an operator token at connect
    #: (a ``load`` of a 100,000-task flow is about 9 MB)
    max_operator_message_size: int = 64 << 20
    max_connections: int = 256
    handshake_timeout: float = 5.0
    idle_timeout: float = 600.0
    max_subscriptions_per_connection: int = 8
    child_wait_timeout: float | None = None
    ssl_context: ssl.SSLContext | None = None
    max_head_size: int = 16384
    outbox_size: int = 64
    send_timeout: float = 60.0  # a peer that takes longer to accept one message is dropped
    #: least time between two deltas of one subscription: what comes meanwhile
    #: merges into the next (a live view redraws at most this often anyway)
    delta_interval: float = 0.01


class DispatcherLike(Protocol):
    async def execute(self, command: str, args: dict[str, Any], identity: Identity) -> Any: ...

    async def child(self, body: dict[str, Any]) -> Any: ...


#: accept() errors of a process or system out of file descriptors or memory
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

_HTTP_STATUS = {
    "bad_request": 400,
    "unauthorized": 403,
    "forbidden": 403,
    "zombie": 403,
    "not_found": 404,
    "too_large": 413,
    "server_error": 500,
    "unavailable": 503,
}


class Service:
    """Serves users and jobs on listeners; see the module docstring."""

    def __init__(
        self,
        dispatcher: DispatcherLike,
        hub: Hub,
        auth: Auth,
        config: ServiceConfig | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.hub = hub
        self.auth = auth
        self.config = config or ServiceConfig()
        self.connections = 0
        self.stopping = False
        self._accept_scope: trio.CancelScope | None = None
        # Scopes to cancel on stop(): waits for a request, and held child waits.
        self._idle_scopes: set[trio.CancelScope] = set()
        self._wait_scopes: set[trio.CancelScope] = set()

    async def serve(
        self,
        listeners: list[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections, each in its own task, until :meth:`stop`.

        With ``config.ssl_context``, every connection speaks TLS first.
        Returns once stopped and every connection has ended; cancelling
        closes every connection at once.
        """
        context = self.config.ssl_context
        if context is not None:
            listeners = [trio.SSLListener(lst, context, https_compatible=True) for lst in listeners]
        if self.stopping:
            task_status.started(listeners)
            return
        async with trio.open_nursery() as handlers:
            with trio.CancelScope() as self._accept_scope:
                async with trio.open_nursery() as acceptors:
                    for listener in listeners:
                        acceptors.start_soon(self._accept, listener, handlers)
                    task_status.started(listeners)

    async def _accept(self, listener: trio.abc.Listener[Any], handlers: trio.Nursery) -> None:
        # trio.serve_listeners, less its second close of each stream (and the
        # cancel scope that takes): handle_stream closes the stream itself.
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    log.error("accept failed (%s); retrying in 0.1 s", exc)
                    await trio.sleep(0.1)
                else:
                    handlers.start_soon(self.handle_stream, stream)

    def stop(self) -> None:
        """Stop gracefully: accept no more connections, answer the requests in
        progress, then close each connection (WebSocket code 1001, "server
        shutdown"). Held child ``wait`` requests are answered ``unavailable``
        (503) so their jobs retry. :meth:`serve` returns when all have ended.
        """
        self.stopping = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for scope in (*self._idle_scopes, *self._wait_scopes):
            scope.cancel()

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it ends; never raises but ``Cancelled``."""
        self.connections += 1
        try:
            await self._handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("connection dropped: %s", one_line(exc))
        except trio_websocket.ConnectionClosed:
            log.debug("websocket closed while sending")
        except Exception:
            log.exception("connection failed")
        finally:
            self.connections -= 1
            if type(stream) is trio.SocketStream:
                # Closing a plain socket never blocks: no cancel scope needed.
                stream.socket.close()
            else:
                await trio.aclose_forcefully(stream)

    # ---------------------------------------------------------------- HTTP

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            body = b""
            head: RequestHead | None = None
            is_child = False
            timeout = self.config.handshake_timeout
            # The head, then the body, each within handshake_timeout. One scope
            # for both: while it waits for the head, stop() cancels it too.
            with self.idle_scope() as timer:
                timer.deadline = trio.current_time() + timeout
                head = await self._read_head(stream)
                if head is None:
                    return
                self._idle_scopes.discard(timer)
                timer.deadline = trio.current_time() + timeout
                is_child = head.method == "POST" and head.path == "/child"
                if head.is_websocket():
                    head.check_websocket()
                elif is_child:
                    body = await self._read_body(stream, head)
            if timer.cancelled_caught:
                if not self.stopping:
                    log.debug("connection gave no complete request in time")
                return
            assert head is not None
            if is_child:
                await self._http_child(stream, body)
            elif head.is_websocket():
                await self._websocket(stream, head)
            elif head.path in ("/", "/health") and head.method == "GET":
                info = {"ok": True, "service": "takler", "version": takler.__version__}
                await stream.send_all(reply_bytes(200, info))
            elif head.path == "/child":
                raise HttpError(405, "bad_request", "use POST for /child")
            else:
                raise HttpError(404, "not_found", f"no resource {head.path[:100]}")
        except HttpError as exc:
            error = {"code": exc.code, "message": str(exc)}
            await stream.send_all(reply_bytes(exc.status, {"ok": False, "error": error}))

    async def _read_head(self, stream: trio.abc.Stream) -> RequestHead | None:
        buf = bytearray()
        while True:
            end = buf.find(b"\r\n\r\n", max(0, len(buf) - 4096 - 3))
            if end >= 0 and end < self.config.max_head_size:
                return parse_head(bytes(buf), end + 4)
            if len(buf) > self.config.max_head_size:
                raise HttpError(431, "too_large", "request head too large")
            data = await stream.receive_some(4096)
            if not data:
                return None
            buf += data
            if not plausible(buf):
                raise HttpError(400, "bad_request", "not an HTTP request")

    async def _read_body(self, stream: trio.abc.Stream, head: RequestHead) -> bytes:
        if "transfer-encoding" in head.headers:
            raise HttpError(400, "bad_request", "send the body with Content-Length")
        length = head.headers.get("content-length", "")
        if not length.isdigit():
            raise HttpError(411, "bad_request", "Content-Length required")
        size = int(length)
        if size > self.config.max_message_size:
            raise HttpError(413, "too_large", f"body exceeds {self.config.max_message_size} bytes")
        if head.headers.get("expect", "").lower() == "100-continue":
            await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = bytearray(head.rest)
        while len(body) < size:
            data = await stream.receive_some(min(65536, size - len(body)))
            if not data:
                raise HttpError(400, "bad_request", "body shorter than Content-Length")
            body += data
        return bytes(body[:size])

    async def _http_child(self, stream: trio.abc.Stream, body: bytes) -> None:
        if self.connections > self.config.max_connections:
            raise HttpError(503, "unavailable", "too many connections; retry")
        try:
            result = await self.run_child(
                unstructure(decode_child(body, self.config.max_message_size))
            )
        except Exception as exc:
            code = error_code(exc)
            if code == "server_error":
                log.exception("child command failed")
            status = _HTTP_STATUS.get(code, 400)
            raise HttpError(status, code, one_line(exc)) from None
        try:
            data = _OK_NONE if result is None else reply_bytes(200, {"ok": True, "result": result})
        except (TypeError, ValueError) as exc:
            log.error("child reply not encodable: %s", exc)
            raise HttpError(500, "server_error", "the reply could not be encoded") from None
        await stream.send_all(data)

    async def run_child(self, body: dict[str, Any]) -> Any:
        """Apply a validated child command; a held ``wait`` ends with
        ``ServiceUnavailable`` after ``child_wait_timeout`` or on :meth:`stop`."""
        if body.get("command") != "wait":
            return await self.dispatcher.child(body)
        timeout = self.config.child_wait_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            self._wait_scopes.add(scope)
            if self.stopping:
                scope.cancel()
            try:
                return await self.dispatcher.child(body)
            finally:
                self._wait_scopes.discard(scope)
        if self.stopping:
            raise ServiceUnavailable("the server is stopping; retry")
        raise ServiceUnavailable(f"wait: still waiting after {timeout:g} s; retry")

    def idle_scope(self) -> _IdleScope:
        """A scope around waiting for a request, cancelled by :meth:`stop`
        (a context manager giving the :class:`trio.CancelScope`)."""
        return _IdleScope(self)

    # ---------------------------------------------------------------- WebSocket

    async def _websocket(self, stream: trio.abc.Stream, head: RequestHead) -> None:
        config = self.config
        token = head.bearer_token()
        limit = config.max_message_size
        if token is not None and self.auth.identify(token).role == "operator":
            # Operators load flows: big messages, from someone we trust.
            limit = max(limit, config.max_operator_message_size)
        async with trio.open_nursery() as nursery:
            ws = None
            with trio.move_on_after(config.handshake_timeout):
                request = await trio_websocket.wrap_server_stream(
                    nursery,
                    ReplayStream(stream, head.raw),
                    message_queue_size=1,
                    max_message_size=limit,
                    receive_buffer_size=_RECEIVE_SIZE,
                )
                ws = await request.accept()
            try:
                if ws is None:
                    log.debug("websocket handshake timed out")
                elif self.connections > config.max_connections:
                    await close_websocket(
                        ws, 1013, "too many connections", config.handshake_timeout
                    )
                else:
                    await Session(self, ws, stream, token, limit).run()
            finally:
                if ws is not None and ws.closed is None:
                    # Cancelled: the reader is gone, so do not wait for the peer's reply.
                    stopping = trio.current_effective_deadline() == -math.inf
                    with trio.CancelScope(shield=True):
                        await close_websocket(
                            ws, 1001, "server shutdown" if stopping else "closing", 0.1
                        )
                nursery.cancel_scope.cancel()


class _IdleScope:
    """:meth:`Service.idle_scope`: a plain class, cheaper than a generator."""

    __slots__ = ("_scope", "_service")

    def __init__(self, service: Service) -> None:
        self._service = service
        self._scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        scope = self._scope.__enter__()
        if self._service.stopping:
            scope.cancel()
        self._service._idle_scopes.add(scope)
        return scope

    def __exit__(self, *exc: Any) -> bool:
        self._service._idle_scopes.discard(self._scope)
        return self._scope.__exit__(*exc)


#: the reply to every child command that returns nothing
_OK_NONE = reply_bytes(200, {"ok": True, "result": None})
