"""HTTP/1.1 at the service's door: the request head, JSON replies, replaying read bytes.

No I/O of its own except :class:`ReplayStream`, which wraps a stream.
"""

from __future__ import annotations

import http
import re
from typing import Any

import attrs
import trio

from takler.protocol import encode


class HttpError(Exception):
    """Answer the request with this status and error code, then close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@attrs.frozen
class RequestHead:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    raw: bytes  # every byte read so far
    rest: bytes  # what followed the head

    def is_websocket(self) -> bool:
        return "websocket" in self.headers.get("upgrade", "").lower()

    def check_websocket(self) -> None:
        if self.method != "GET" or "sec-websocket-key" not in self.headers:
            raise HttpError(
                400, "bad_request", "a WebSocket upgrade needs GET and Sec-WebSocket-Key"
            )

    def bearer_token(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return (token.strip() or None) if scheme.lower() == "bearer" else None


_REQUEST_LINE = re.compile(r"([A-Z]{1,16}) (\S{1,8000}) HTTP/1\.[01]")
_HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
# A prefix of a request line: catches TLS or garbage on the plain port at once.
_PLAUSIBLE = re.compile(rb"[A-Z]{0,16}(?: |$)")


def plausible(data: bytes | bytearray) -> bool:
    """Whether ``data`` may be the start of an HTTP request."""
    return _PLAUSIBLE.match(data) is not None


def parse_head(data: bytes, end: int) -> RequestHead:
    """Parse an HTTP/1.1 request head ending at ``data[end]``."""
    lines = data[: end - 4].decode("latin-1").split("\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise HttpError(400, "bad_request", "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        field = _HEADER.fullmatch(line)
        if field is None:
            raise HttpError(400, "bad_request", "malformed header line")
        name = field[1].lower()
        headers[name] = f"{headers[name]}, {field[2]}" if name in headers else field[2]
    path = match[2].partition("?")[0]
    return RequestHead(match[1], path, headers, data, data[end:])


def reply_bytes(status: int, body: dict[str, Any]) -> bytes:
    """A complete HTTP/1.1 response with a JSON body; the connection then closes."""
    data = encode(body).encode()
    phrase = http.HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


class ReplayStream(trio.abc.Stream):
    """A stream that first gives back bytes already read from it."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._prefix:
            return bytes(await self._stream.receive_some(max_bytes))
        await trio.lowlevel.checkpoint()
        size = len(self._prefix) if max_bytes is None else max_bytes
        chunk, self._prefix = self._prefix[:size], self._prefix[size:]
        return chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()
