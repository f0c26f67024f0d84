"""Shared by the end-to-end security tests: a real server on a loopback port,
its fixtures, and small helpers to talk to it raw or through the command line."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
import trustme

from takler.codec import dump_bunch
from takler.core import Flow
from takler.server import TaklerServer
from takler_cli.main import main as takler_main

HEAD = '{% include "head.takler" %}\n'
TAIL = '{% include "tail.takler" %}\n'
WAIT_LIMIT = 20.0


# ---------------------------------------------------------------- helpers


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / "scripts" / f"{name}.takler"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + body + "\n" + TAIL)
    return path


async def wait_for(server: TaklerServer, predicate: Callable[[], bool]) -> None:
    """Wait, event-driven, until ``predicate()`` holds; bounded."""
    with trio.fail_after(WAIT_LIMIT):
        while not predicate():
            await server.wait_changed()


def model(server: TaklerServer) -> dict[str, Any]:
    """Everything a command could change (the clock aside)."""
    data = dump_bunch(server.bunch, secrets=True)
    data.pop("now", None)
    return data


def quiet_flow(tmp_path: Path, name: str = "b") -> Flow:
    """A flow that is never begun: commands may look at it and change it, no job runs."""
    flow = Flow(name)
    flow.add_parameter("TAKLER_HOME", tmp_path / "jobs")
    fam = flow.add_family("f")
    t1 = fam.add_task("t1")
    t1.add_event("ev")
    t1.add_meter("m", 0, 10)
    t1.add_label("lab", "")
    fam.add_task("t2").add_trigger("t1 == complete")
    return flow


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``takler ARGV`` (it runs its own Trio loop, so in a thread)."""
    capsys.readouterr()
    code = await trio.to_thread.run_sync(takler_main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@asynccontextmanager
async def raw_ws(port: int, token: str | None = None) -> AsyncIterator[Any]:
    """A bare WebSocket to the server: sends any text, reads raw replies."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "127.0.0.1", "/", extra_headers=headers, max_message_size=1 << 24
            )
            yield ws
            await ws.aclose()
            nursery.cancel_scope.cancel()
    finally:
        # trio-websocket leaves the socket open when the server closed first.
        await trio.aclose_forcefully(stream)


async def ask(ws: Any, message: str | bytes) -> dict[str, Any]:
    """Send one message and return the reply (skipping stream messages)."""
    await ws.send_message(message)
    with trio.fail_after(WAIT_LIMIT):
        while True:
            reply = json.loads(await ws.get_message())
            if "type" not in reply:
                return reply  # type: ignore[no-any-return]


def refused(reply: dict[str, Any], code: str) -> None:
    """An error reply with ``code`` and a one-line message."""
    assert reply["v"] == 1 and reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    message = reply["error"]["message"]
    assert isinstance(message, str) and message and "\n" not in message and len(message) <= 500


class Lines(logging.Handler):
    """Collects the messages of a logger."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(name)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> Lines:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def clear_takler_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TAKLER_* variable of the caller's may steer the servers or clients under test."""
    for key in [k for k in os.environ if k.startswith("TAKLER_")]:
        monkeypatch.delenv(key)


async def start_server(tmp_path: Path, nursery: trio.Nursery) -> TaklerServer:
    """A running server on a free loopback port, holding :func:`quiet_flow`."""
    server = TaklerServer(port=0, home=tmp_path / "home", console=False)
    server.add_flows([quiet_flow(tmp_path)])
    await server.start()
    nursery.start_soon(server.run)
    return server


def write_pki(tmp_path: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, written as PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return files
