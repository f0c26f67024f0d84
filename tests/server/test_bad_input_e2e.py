"""Bad input, limits and load against the real server, end to end: every refusal
is a clear one-line error that changes nothing; a burst of 100 clients is
answered in full."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from takler.client.client import Client, open_client
from takler.protocol import Closed, Delta, Snapshot
from takler.server import TaklerServer
from tests.server.security_helpers import (
    WAIT_LIMIT,
    ask,
    clear_takler_env,
    model,
    raw_ws,
    refused,
    start_server,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def no_takler_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_takler_env(monkeypatch)


@pytest.fixture
async def served(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[TaklerServer]:
    server = await start_server(tmp_path, nursery)
    yield server
    server.stop_now()


# ---------------------------------------------------------------- bad input


BAD_INPUT = [
    ('{"v": 1, "id": 1, "command": "show", "args": {', "bad_request"),
    ("null", "bad_request"),
    ('["show"]', "bad_request"),
    ('{"v": 1, "id": {"x": 1}, "command": "ping"}', "bad_request"),
    ('{"v": 2, "id": 1, "command": "ping"}', "bad_request"),
    ('{"v": 1, "id": 1, "command": "show", "args": []}', "bad_request"),
    ('{"v": 1, "id": 1, "command": "ping", "extra": 1}', "bad_request"),
    ('{"v": 1, "id": 1, "command": "frobnicate", "args": {}}', "unknown_command"),
    ('{"v": 1, "id": 1, "command": "__class__", "args": {}}', "unknown_command"),
    ('{"v": 1, "id": 1, "command": "suspend", "args": {"path": 7}}', "bad_args"),
    ('{"v": 1, "id": 1, "command": "suspend", "args": {}}', "bad_args"),
    ('{"v": 1, "id": 1, "command": "requeue", "args": {"path": "/b", "force": "yes"}}', "bad_args"),
    ('{"v": 1, "id": 1, "command": "suspend", "args": {"path": "/b", "x": 1}}', "bad_args"),
    ('{"v": 1, "id": 1, "command": "suspend", "args": {"path": "/b/nothing"}}', "not_found"),
    ('{"v": 1, "id": 1, "command": "why", "args": {"path": "/nope"}}', "not_found"),
    ('{"v": 1, "id": 1, "command": "force", "args": {"path": "/b/f/t1", "state": "boom"}}',
     "bad_value"),
    ('{"v": 1, "id": 1, "command": "force", "args": {"path": "/b/f/t1:nope", "state": "set"}}',
     "not_found"),
    ('{"v": 1, "id": 1, "command": "alter", "args": {"path": "/b/f/t2", "kind": "trigger",'
     ' "value": "t1 =="}}', "bad_expression"),
    ('{"v": 1, "id": 1, "command": "alter", "args": {"path": "/b/f/t2", "kind": "complete",'
     ' "value": "((t1 == complete"}}', "bad_expression"),
    ('{"v": 1, "id": 1, "command": "alter", "args": {"path": "/b", "kind": "variable",'
     ' "name": "X", "value": {"a": 1}}}', "bad_value"),
    ('{"v": 1, "id": 1, "command": "alter", "args": {"path": "/b", "kind": "variable",'
     ' "name": "bad name!", "value": "1"}}', "bad_name"),
    ('{"v": 1, "id": 1, "command": "alter", "args": {"path": "/b/f/t1", "kind": "meter",'
     ' "name": "m", "value": 99}}', "bad_value"),
    ('{"v": 1, "id": 1, "command": "alter", "args": {"path": "/b", "kind": "code",'
     ' "name": "X", "value": "1"}}', "bad_value"),
    (json.dumps({"v": 1, "id": 1, "command": "show", "args": {"path": "/b/" + "x" * 5000}}),
     "too_large"),
    (json.dumps({"v": 1, "id": 1, "command": "alter", "args": {
        "path": "/b", "kind": "variable", "name": "N" * 2000, "value": "1"}}), "bad_name"),
    (json.dumps({"v": 1, "id": "i" * 100, "command": "ping"}), "too_large"),
    (json.dumps({"v": 1, "id": 1, "command": "c" * 100}), "too_large"),
    ('{"v": 1, "id": 1, "command": "load", "args": {"flows": [{"kind": "flow"}]}}', "bad_data"),
    ('{"v": 1, "id": 1, "command": "replace", "args": {"path": "/b", "flow": {"name": "b"}}}',
     "bad_data"),
]  # fmt: skip


async def test_bad_input_gets_a_clear_error_and_changes_nothing(served: TaklerServer) -> None:
    before = model(served)
    async with raw_ws(served.port, served.token) as ws:
        for text, code in BAD_INPUT:
            refused(await ask(ws, text), code)
            assert model(served) == before, text
        refused(await ask(ws, b"\x00binary"), "bad_request")
        intruder = {"kind": "flow", "name": "intruder"}
        replace = {"v": 1, "id": 1, "command": "replace", "args": {"path": "/b", "flow": intruder}}
        refused(await ask(ws, json.dumps(replace)), "bad_value")
        assert "intruder" not in served.bunch.flows
        reply = await ask(ws, '{"v": 1, "id": "still", "command": "ping"}')
        assert reply["id"] == "still" and reply["ok"] is True
    assert model(served) == before
    async with raw_ws(served.port, served.token) as ws:
        # An optional argument given as null means "not given".
        alter = {"path": "/b", "action": None, "kind": "variable", "name": "Y", "value": "2"}
        reply = await ask(ws, json.dumps({"v": 1, "id": 2, "command": "alter", "args": alter}))
        assert reply["ok"] is True, reply
    assert served.bunch.flows["b"].parameters["Y"] == "2"


async def test_load_takes_data_and_imports_nothing(
    tmp_path: Path, served: TaklerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n"
        "class Evil:\n    pass\ndef boom(*a):\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    evil_flows = [
        {"kind": "evilmod.Evil", "name": "x"},
        {"kind": "flow", "name": "x", "py/object": "evilmod.Evil"},
        {"kind": "flow", "name": "x", "__reduce__": ["evilmod.boom", []]},
        {"kind": "flow", "name": "x", "!!python/object/apply:evilmod.boom": []},
        {"kind": "flow", "name": "x", "parameters": {"P": {"__class__": "evilmod.Evil"}}},
        {"kind": "flow", "name": "x", "parameters": {"P": {"py/reduce": ["evilmod.boom"]}}},
        {"kind": "flow", "name": "x", "repeat": {"__reduce__": "evilmod.boom"}},
        {"kind": "flow", "name": "x", "children": [{"kind": "evilmod.Evil", "name": "t"}]},
        {"kind": "flow", "name": "evilmod.Evil:boom()"},
        {"kind": "flow", "name": "x", "trigger": {"text": "__import__('evilmod')"}},
    ]
    before = model(served)
    async with raw_ws(served.port, served.token) as ws:
        for data in evil_flows:
            request = {"v": 1, "id": 1, "command": "load", "args": {"flows": [data]}}
            reply = await ask(ws, json.dumps(request))
            assert reply["ok"] is False, data
            assert reply["error"]["code"] in ("bad_data", "bad_name", "bad_expression"), reply
        request = {"v": 1, "id": 2, "command": "replace", "args": {"path": "/b", "flow": {
            "kind": "flow", "name": "b", "__reduce__": ["evilmod.boom", []]}}}  # fmt: skip
        refused(await ask(ws, json.dumps(request)), "bad_data")
    assert "evilmod" not in sys.modules
    assert not marker.exists()
    assert model(served) == before


# ---------------------------------------------------------------- limits


async def test_limits_close_with_a_clear_reason(served: TaklerServer) -> None:
    async with raw_ws(served.port, served.token) as ws:
        for n in range(8):
            reply = await ask(ws, json.dumps({"v": 1, "id": n, "command": "subscribe"}))
            assert reply["ok"] is True
        reply = await ask(ws, '{"v": 1, "id": 9, "command": "subscribe"}')
        refused(reply, "too_many")
        assert "8 subscriptions" in reply["error"]["message"]
        assert (await ask(ws, '{"v": 1, "id": 10, "command": "ping"}'))["ok"] is True
    big = json.dumps({"v": 1, "id": 1, "command": "ping", "args": {"x": "y" * (1 << 20)}})
    # An operator token given at connect allows big messages (flows to load)...
    async with raw_ws(served.port, served.token) as ws:
        reply = await ask(ws, big)
        refused(reply, "bad_args")
    # ... the 1 MiB limit holds for anyone else.
    async with raw_ws(served.port, None) as ws:
        await ws.send_message(big)
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            with trio.fail_after(WAIT_LIMIT):
                await ws.get_message()
        reason = info.value.reason
        assert reason is not None and reason.code == 1009


# ---------------------------------------------------------------- load


async def test_load_100_clients_against_the_real_server(served: TaklerServer) -> None:
    clients, burst, subscribed = 100, 20, 20
    answered = ready = finished = 0
    marks: list[float] = []
    seen: list[set[str]] = []
    all_ready, bursts_done = trio.Event(), trio.Event()

    async def run_burst(client: Client, n: int) -> None:
        nonlocal answered, finished, ready
        # Every subscriber is in place before the first change.
        ready += 1
        if ready == clients:
            marks.append(time.perf_counter())
            all_ready.set()
        await all_ready.wait()
        for i in range(burst):
            if i == 0:
                await client.call("alter", path="/b/f/t1", kind="label", name="lab", value=f"c{n}")
            elif i % 2:
                assert (await client.call("ping"))["flows"] == 1
            else:
                assert (await client.call("show", path="/b/f"))["name"] == "f"
            answered += 1
        finished += 1
        if finished == clients:
            marks.append(time.perf_counter())
            bursts_done.set()

    async def collect(sub: Any, labels: set[str]) -> None:
        async for message in sub:
            assert not isinstance(message, Closed), message
            if isinstance(message, Delta):
                labels.update(c["new"] for c in message.changes if c["kind"] == "label")
            if "last" in labels:
                return

    async def user(n: int) -> None:
        async with open_client("127.0.0.1", served.port, token=served.token, timeout=60) as c:
            if n >= subscribed:
                await run_burst(c, n)
                return
            labels: set[str] = set()
            seen.append(labels)
            async with c.subscribe("/b") as sub:
                assert isinstance(await sub.__anext__(), Snapshot)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect, sub, labels)
                    await run_burst(c, n)

    start = time.perf_counter()
    with trio.fail_after(120):
        async with trio.open_nursery() as users:
            for n in range(clients):
                users.start_soon(user, n)
            await bursts_done.wait()
            async with open_client("127.0.0.1", served.port, token=served.token) as c:
                await c.call("alter", path="/b/f/t1", kind="label", name="lab", value="last")
    elapsed = time.perf_counter() - start
    assert answered == clients * burst
    expected = {f"c{n}" for n in range(clients)} | {"last"}
    assert len(seen) == subscribed and all(labels == expected for labels in seen)
    burst_time = marks[1] - marks[0]
    print(f"\nreal server: {answered} requests from {clients} clients ({subscribed} subscribed):"
          f" {answered / burst_time:.0f} requests/s in the burst ({burst_time:.2f} s),"
          f" {elapsed:.2f} s in all with connecting")  # fmt: skip
