"""A fake Dispatcher over a small real Bunch, for the service, fuzz and client tests.

It implements the Dispatcher interface (execute, child, snapshot) with a
handful of commands, publishes every change to its hub, and records what it
was asked to do.
"""

from __future__ import annotations

import datetime as dt
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

from takler.core import Bunch, Family, Flow, Node, Task, ops
from takler.core.errors import InvalidValueError, NodeNotFoundError, StateError
from takler.protocol import ServiceUnavailable
from takler.server.auth import Auth, Identity
from takler.server.hub import Hub
from takler.server.service import Service, ServiceConfig

NOW = dt.datetime(2024, 1, 1)
PASSWORD = "job-secret"
OPERATOR_TOKEN = "op-token"
READ_TOKEN = "read-token"


def make_bunch() -> Bunch:
    bunch = Bunch(now=NOW)
    flow = Flow("f")
    fam = flow.add_family("fam")
    t1 = fam.add_task("t1")
    t1.add_event("ev")
    t1.add_meter("m", 0, 10)
    t1.add_label("lab", "")
    fam.add_task("t2")
    bunch.add_flow(flow)
    ops.begin(flow, NOW)
    ops.start_submission(t1, PASSWORD, NOW)
    bunch.drain()
    return bunch


def dump(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": node.kind, "name": node.name, "state": node.state.value}
    if isinstance(node, Family):
        out["children"] = [dump(child) for child in node.children]
    return out


class FakeDispatcher:
    """Commands: ping, show, why, suspend, resume, stop, history (always crashes), child."""

    def __init__(self) -> None:
        self.bunch = make_bunch()
        self.hub: Hub | None = None
        self.service: Service | None = None
        self.state = "running"
        self.executed: list[tuple[str, dict[str, Any], Identity]] = []
        self.children: list[dict[str, Any]] = []
        self.release_waits = trio.Event()

    def publish(self) -> None:
        changes = self.bunch.drain()
        if self.hub is not None and changes:
            self.hub.publish(changes, self.state)

    def snapshot(self, path: str | None, secrets: bool = False) -> dict[str, Any]:
        if path is None:
            return {"flows": [dump(f) for f in self.bunch.flows.values()]}
        return dump(self.bunch.find_node(path))

    def fingerprint(self) -> list[tuple[Any, ...]]:
        """Everything a command could change."""
        rows: list[tuple[Any, ...]] = []
        for node in self.bunch.walk():
            rows.append((node.node_path, node.state, node.suspended))
            rows.extend((e.name, e.value) for e in node.events.values())
            rows.extend((m.name, m.value) for m in node.meters.values())
            rows.extend((lb.name, lb.value) for lb in node.labels.values())
        return rows

    async def execute(self, command: str, args: dict[str, Any], identity: Identity) -> Any:
        self.executed.append((command, args, identity))
        await trio.lowlevel.checkpoint()
        if command == "ping":
            tasks = sum(1 for _ in self.bunch.tasks())
            return {"version": "test", "server_state": self.state, "flows": 1, "tasks": tasks}
        if command == "show":
            return self.snapshot(args.get("path"))
        if command == "why":
            node = self.bunch.find_node(args["path"])
            return {"path": node.node_path, "state": node.state.value, "reasons": []}
        if command in ("suspend", "resume"):
            node = self.bunch.find_node(args["path"])
            (ops.suspend if command == "suspend" else ops.resume)(node)
            self.publish()
            return None
        if command == "history":
            raise RuntimeError("the fake's history always crashes")
        if command == "stop" and self.service is not None:
            self.service.stop()  # as the real server does, from inside the request
            return {"stopping": True}
        raise StateError(f"the fake does not do {command}")

    async def child(self, body: dict[str, Any]) -> Any:
        self.children.append(body)
        await trio.lowlevel.checkpoint()
        if self.state == "halted":
            raise ServiceUnavailable("the server is halted: retry later")
        node = self.bunch.find_node(body["path"])
        if not isinstance(node, Task):
            raise NodeNotFoundError(f"{body['path']} is not a task")
        ops.check_child(node, body["password"], body["tryno"])
        args = body["args"]
        command = body["command"]
        if command == "wait":
            await self.release_waits.wait()
            return {"holds": True}
        if command == "event":
            node.set_event(args["name"], bool(args.get("value", True)))
        elif command == "meter":
            node.set_meter(args["name"], args["value"])
        elif command == "label":
            node.set_label(args["name"], str(args["text"]))
        elif command == "init":
            ops.init(node)
        else:
            raise InvalidValueError(f"unknown child command {command!r}")
        self.publish()
        return None


def make_service(**config: Any) -> tuple[Service, FakeDispatcher, Hub]:
    """A service over the fake, with an operator and a read-only token."""
    dispatcher = FakeDispatcher()
    hub = Hub(dispatcher.snapshot, max_buffer=config.pop("max_buffer", 1000))
    dispatcher.hub = hub
    auth = Auth.memory({OPERATOR_TOKEN: ("alice", "operator"), READ_TOKEN: ("bob", "read")})
    service = Service(dispatcher, hub, auth, ServiceConfig(**config))
    dispatcher.service = service
    return service, dispatcher, hub


@asynccontextmanager
async def ws_session(service: Service, token: str | None = None, lockstep: bool = False) -> Any:
    """A trio-websocket client connected to ``service`` over a memory stream.

    With ``lockstep``, a send blocks until the other side reads (no buffering).
    """
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.handle_stream, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "test",
            "/",
            extra_headers=headers,
            max_message_size=1 << 24,
            message_queue_size=1,
        )
        yield ws
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def http_exchange(service: Service, raw: bytes) -> tuple[int, dict[str, Any] | None, bytes]:
    """Send raw bytes as one HTTP request; return (status, JSON body, raw reply)."""
    import json

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.handle_stream, server)
        await client.send_all(raw)
        reply = bytearray()
        while True:
            data = await client.receive_some()
            if not data:
                break
            reply += data
    head, _, body = (
        bytes(reply).removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n").partition(b"\r\n\r\n")
    )
    if not head:
        return 0, None, bytes(reply)
    status = int(head.split(b" ")[1])
    return status, json.loads(body) if body else None, bytes(reply)


def child_post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /child HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"Connection: close\r\n\r\n"
        + body
    )
