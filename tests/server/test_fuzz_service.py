"""Fuzzing the service over memory streams: random and mutated messages never hurt it.

Every reply must be well-formed JSON with a documented error code, the
connection must stay usable, and refused input must leave the model as it was.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from takler.protocol import COMMAND_ARGS, ERROR_CODES
from tests.server.fake_dispatcher import READ_TOKEN, make_service, ws_session

MAX_MESSAGE = 8192

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

_SAMPLE_ARGS: dict[type | object, Any] = {str: "/f/fam/t1", int: 1, bool: True, list: [],
                                          dict: {}}  # fmt: skip


def template(command: str) -> dict[str, Any]:
    """A valid request for ``command`` (the job password is wrong on purpose)."""
    args = {
        name: _SAMPLE_ARGS.get(kind, "x")
        for name, (kind, required) in COMMAND_ARGS[command].items()
        if required
    }
    if command == "child":
        args.update(password="not-the-password", command="meter", args={"name": "m", "value": 3})
    return {"v": 1, "id": 1, "command": command, "args": args}


@st.composite
def mutated_requests(draw: st.DrawFn) -> str:
    message = template(draw(st.sampled_from(sorted(COMMAND_ARGS))))
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["top", "args"]))
        target = (
            message
            if where == "top" or not isinstance(message.get("args"), dict)
            else message["args"]
        )
        action = draw(st.sampled_from(["drop", "set", "add", "rename"]))
        if action == "drop" and target:
            target.pop(draw(st.sampled_from(sorted(target))))
        elif action == "set" and target:
            target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
        elif action == "rename":
            message["command"] = draw(st.text(max_size=12) | st.sampled_from(sorted(COMMAND_ARGS)))
        else:
            target[draw(st.text(max_size=10))] = draw(json_values)
    return json.dumps(message)


messages = st.one_of(
    mutated_requests(),
    st.sampled_from(sorted(COMMAND_ARGS)).map(lambda c: json.dumps(template(c))),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check_reply(reply: Any) -> None:
    assert isinstance(reply, dict) and reply["v"] == 1
    if "type" in reply:
        assert reply["type"] in ("snapshot", "delta", "closed")
        return
    assert reply["ok"] in (True, False)
    if not reply["ok"]:
        assert reply["error"]["code"] in ERROR_CODES, reply
        assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]


async def exchange(ws: Any, message: str | bytes) -> dict[str, Any]:
    await ws.send_message(message)
    while True:
        reply = json.loads(await ws.get_message())
        check_reply(reply)
        if "type" not in reply:
            return reply  # type: ignore[no-any-return]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(messages, min_size=20, max_size=40))
def test_websocket_fuzz(batch: list[str | bytes]) -> None:
    errors = _Errors()
    logging.getLogger("takler.service").addHandler(errors)

    async def main() -> None:
        service, dispatcher, _ = make_service(max_message_size=MAX_MESSAGE)
        before = dispatcher.fingerprint()
        for token in (READ_TOKEN, None):
            async with ws_session(service, token) as ws:
                for message in batch:
                    reply = await exchange(ws, message)
                    if isinstance(message, bytes):
                        assert reply["error"]["code"] == "bad_request"
                assert (await exchange(ws, json.dumps(template("ping"))))["ok"] is True
        assert dispatcher.fingerprint() == before
        assert all(command in ("ping", "show", "why", "history", "zombies") or
                   command not in COMMAND_ARGS for command, _, _ in dispatcher.executed)  # fmt: skip
        await trio.testing.wait_all_tasks_blocked()
        assert service.connections == 0

    try:
        trio.run(main)
    finally:
        logging.getLogger("takler.service").removeHandler(errors)
    assert [m for m in errors.messages if not m.startswith("command history failed")] == []


async def http_raw(service: Any, raw: bytes) -> bytes:
    client, server = trio.testing.memory_stream_pair()
    reply = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.handle_stream, server)
        await client.send_all(raw)
        await client.send_stream.aclose()
        while data := await client.receive_some():
            reply += data
    return bytes(reply)


http_heads = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda method, path, headers, body: (
            f"{method} {path} HTTP/1.1\r\n".encode() + headers + b"\r\n\r\n" + body
        ),
        st.sampled_from(["GET", "POST", "PUT", "get", ""]),
        st.sampled_from(["/", "/health", "/child", "/x", "*", ""]),
        st.binary(max_size=80),
        st.binary(max_size=80),
    ),
    st.builds(
        lambda body, length: (
            f"POST /child HTTP/1.1\r\nContent-Length: {length}\r\n\r\n".encode() + body
        ),
        json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=100),
        st.integers(0, 120),
    ),
)


@settings(max_examples=150, deadline=None)
@given(raws=st.lists(http_heads, min_size=1, max_size=5))
def test_http_fuzz(raws: list[bytes]) -> None:
    async def main() -> None:
        service, dispatcher, _ = make_service()
        before = dispatcher.fingerprint()
        for raw in raws:
            reply = await http_raw(service, raw)
            if reply:
                head, _, body = reply.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 ")
                data = json.loads(body)
                if not data["ok"]:
                    assert data["error"]["code"] in ERROR_CODES
        assert dispatcher.fingerprint() == before
        assert service.connections == 0

    trio.run(main)
