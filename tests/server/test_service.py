"""The service over memory streams with a fake dispatcher, plus one real TLS socket test."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from takler.client.client import UnreachableError, open_client
from takler.core.change import Change, ChangeKind
from takler.protocol import ERROR_CODES
from takler.server.hub import MERGE_MAX
from takler.server.tls import server_ssl_context
from tests.server.fake_dispatcher import (
    OPERATOR_TOKEN,
    PASSWORD,
    READ_TOKEN,
    child_post,
    http_exchange,
    make_service,
    ws_session,
)


@pytest.fixture(autouse=True)
def no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A connection may fail, but the service must never log an unexpected error."""
    with caplog.at_level(logging.INFO, logger="takler"):
        yield
    unexpected = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.getMessage() != "command history failed"
    ]
    assert unexpected == []


async def ask(ws: Any, message: Any) -> dict[str, Any]:
    await ws.send_message(message if isinstance(message, str) else json.dumps(message))
    reply = json.loads(await ws.get_message())
    assert reply["v"] == 1
    if not reply["ok"]:
        assert reply["error"]["code"] in ERROR_CODES
        assert "\n" not in reply["error"]["message"]
    return reply  # type: ignore[no-any-return]


def req(rid: Any, command: str, **args: Any) -> dict[str, Any]:
    return {"v": 1, "id": rid, "command": command, "args": args}


async def test_ping_and_ids_round_trip() -> None:
    service, _, _ = make_service()
    async with ws_session(service) as ws:
        reply = await ask(ws, req(7, "ping"))
        assert reply == {
            "v": 1,
            "id": 7,
            "ok": True,
            "result": {"version": "test", "server_state": "running", "flows": 1, "tasks": 2},
        }
        reply = await ask(ws, req("abc", "ping"))
        assert reply["id"] == "abc"


@pytest.mark.parametrize(
    ("message", "code", "rid"),
    [
        ("{not json", "bad_request", None),
        ("[1, 2]", "bad_request", None),
        ('"just a string"', "bad_request", None),
        ('{"v": 1, "id": 3, "command": "ping", "args": {"x": NaN}}', "bad_request", None),
        (req(4, "frobnicate"), "unknown_command", 4),
        ({"v": 1, "id": 5, "command": 12, "args": {}}, "bad_request", 5),
        ({"v": 1, "id": 6, "command": "ping", "args": []}, "bad_request", 6),
        ({"v": 1, "id": True, "command": "ping"}, "bad_request", None),
        ({"v": 1, "id": 8, "command": "ping", "extra": 1}, "bad_request", 8),
        ({"v": 2, "id": 9, "command": "ping"}, "bad_request", 9),
        ({"v": 1, "id": "x" * 65, "command": "ping"}, "too_large", None),
        (req(10, "show", path=5), "bad_args", 10),
        (req(11, "why"), "bad_args", 11),
        (req(12, "show", colour="red"), "bad_args", 12),
        (req(13, "why", path="/" + "a" * 5000), "too_large", 13),
        (req(14, "why", path="/f/nope"), "not_found", 14),
        (req(15, "history"), "server_error", 15),
    ],
)
async def test_bad_requests_get_error_replies_and_the_connection_survives(
    message: Any, code: str, rid: Any
) -> None:
    service, dispatcher, _ = make_service()
    before = dispatcher.fingerprint()
    async with ws_session(service, READ_TOKEN) as ws:
        reply = await ask(ws, message)
        assert reply["ok"] is False
        assert reply["error"]["code"] == code
        assert reply["id"] == rid
        assert (await ask(ws, req(99, "ping")))["ok"] is True
    assert dispatcher.fingerprint() == before


async def test_binary_message_is_refused() -> None:
    service, _, _ = make_service()
    async with ws_session(service) as ws:
        await ws.send_message(b'{"v": 1, "id": 1, "command": "ping"}')
        reply = json.loads(await ws.get_message())
        assert reply["error"]["code"] == "bad_request"
        assert (await ask(ws, req(2, "ping")))["ok"]


async def test_roles_missing_wrong_read_and_operator_tokens() -> None:
    service, dispatcher, _ = make_service()
    suspend = req(1, "suspend", path="/f/fam/t2")
    async with ws_session(service) as ws:
        reply = await ask(ws, suspend)
        assert reply["error"]["code"] == "unauthorized"
        assert (await ask(ws, req(2, "show")))["error"]["code"] == "unauthorized"
    async with ws_session(service, "wrong-token") as ws:
        assert (await ask(ws, suspend))["error"]["code"] == "unauthorized"
    async with ws_session(service, READ_TOKEN) as ws:
        assert (await ask(ws, req(2, "show", path="/f/fam")))["ok"]
        assert (await ask(ws, suspend))["error"]["code"] == "forbidden"
    assert not dispatcher.bunch.find_node("/f/fam/t2").suspended
    async with ws_session(service, OPERATOR_TOKEN) as ws:
        assert (await ask(ws, suspend))["ok"]
    assert dispatcher.bunch.find_node("/f/fam/t2").suspended
    assert [(c, i.name) for c, _, i in dispatcher.executed] == [
        ("show", "bob"),
        ("suspend", "alice"),
    ]


async def test_auth_command_and_per_request_token() -> None:
    service, _, _ = make_service()
    async with ws_session(service) as ws:
        reply = await ask(ws, req(1, "auth", token="bad"))
        assert reply["error"]["code"] == "unauthorized"
        reply = await ask(ws, req(2, "auth", token=READ_TOKEN))
        assert reply["result"] == {"name": "bob", "role": "read"}
        assert (await ask(ws, req(3, "show", path="/f")))["ok"]
        assert (await ask(ws, req(4, "suspend", path="/f")))["error"]["code"] == "forbidden"
        with_token = {**req(5, "suspend", path="/f"), "token": OPERATOR_TOKEN}
        assert (await ask(ws, with_token))["ok"]
        # The per-request token does not stick to the connection.
        assert (await ask(ws, req(6, "resume", path="/f")))["error"]["code"] == "forbidden"


async def test_oversized_message_closes_with_1009() -> None:
    service, _, _ = make_service(max_message_size=1000)
    async with ws_session(service, READ_TOKEN) as ws:
        await ws.send_message(json.dumps(req(1, "show", path="/" + "a" * 2000)))
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 1009


async def test_subscribe_snapshot_then_deltas() -> None:
    service, _, hub = make_service()
    async with ws_session(service, OPERATOR_TOKEN) as ws:
        reply = await ask(ws, req(1, "subscribe", path="/f/fam/t2"))
        sid = reply["result"]["subscription"]
        snapshot = json.loads(await ws.get_message())
        assert snapshot == {
            "v": 1,
            "type": "snapshot",
            "subscription": sid,
            "seq": 0,
            "data": {"kind": "task", "name": "t2", "state": "queued"},
        }
        assert (await ask(ws, req(2, "suspend", path="/f/fam/t2")))["ok"]
        delta = json.loads(await ws.get_message())
        assert delta["type"] == "delta" and delta["seq"] == 1
        assert delta["server"] == {"state": "running"}
        assert {"path": "/f/fam/t2", "kind": "suspended", "name": None, "old": False,
                "new": True} in delta["changes"]  # fmt: skip
        assert all(c["path"] == "/f/fam/t2" for c in delta["changes"])
        # A change elsewhere is not sent; the next one here is.
        hub.publish([Change("/f/fam/t1", ChangeKind.meter, "m", 0, 1)], "running")
        hub.publish([Change("/f/fam/t2", ChangeKind.label, "x", "", "y")], "running")
        delta = json.loads(await ws.get_message())
        assert delta["seq"] == 2 and delta["changes"][0]["kind"] == "label"
        assert (await ask(ws, req(3, "unsubscribe", subscription=sid)))["ok"]
        assert len(hub) == 0
        hub.publish([Change("/f/fam/t2", ChangeKind.label, "x", "y", "z")], "running")
        assert (await ask(ws, req(4, "ping")))["ok"]  # no stream message in between
        reply = await ask(ws, req(5, "unsubscribe", subscription=sid))
        assert reply["error"]["code"] == "not_found"


async def test_subscribe_unknown_path_and_too_many() -> None:
    service, _, hub = make_service(max_subscriptions_per_connection=2)
    async with ws_session(service, READ_TOKEN) as ws:
        assert (await ask(ws, req(1, "subscribe", path="/nope")))["error"]["code"] == "not_found"
        for rid in (2, 3):
            assert (await ask(ws, req(rid, "subscribe")))["ok"]
            assert json.loads(await ws.get_message())["type"] == "snapshot"
        assert (await ask(ws, req(4, "subscribe")))["error"]["code"] == "too_many"
        assert len(hub) == 2
    await trio.testing.wait_all_tasks_blocked()
    assert len(hub) == 0  # closing the connection ends its subscriptions


async def test_slow_subscriber_is_closed_too_slow() -> None:
    service, _, hub = make_service(max_buffer=3, outbox_size=1)
    async with ws_session(service, READ_TOKEN) as ws:
        sid = (await ask(ws, req(1, "subscribe", path="/f")))["result"]["subscription"]
        await trio.testing.wait_all_tasks_blocked()
        for i in range(20):
            # Batches too big to merge with one another.
            batch = [Change("/f/fam/t1", ChangeKind.meter, "m", i, i + 1)] * MERGE_MAX
            hub.publish(batch, "running")
        types = []
        while True:
            message = json.loads(await ws.get_message())
            types.append(message["type"])
            if message["type"] == "closed":
                assert message == {"v": 1, "type": "closed", "subscription": sid,
                                   "reason": "too slow"}  # fmt: skip
                break
        assert types[0] == "snapshot" and len(types) < 10
        assert len(hub) == 0
        assert (await ask(ws, req(2, "ping")))["ok"]


async def test_deltas_come_at_most_every_delta_interval(
    mock_clock: trio.testing.MockClock,
) -> None:
    # A clock that moves only when told: the forwarder's wait lasts until the jump.
    service, _, hub = make_service(delta_interval=0.2)
    async with ws_session(service, READ_TOKEN) as ws:
        try:
            assert (await ask(ws, req(1, "subscribe", path="/f")))["ok"]
            assert json.loads(await ws.get_message())["type"] == "snapshot"
            (sub,) = hub._subs.values()
            mock_clock.jump(0.2)  # the interval after the snapshot
            hub.publish([Change("/f/fam/t1", ChangeKind.meter, "m", 0, 1)], "running")
            first = json.loads(await ws.get_message())
            hub.publish([Change("/f/fam/t1", ChangeKind.meter, "m", 1, 2)], "running")
            await trio.testing.wait_all_tasks_blocked()  # with no interval, it would go out alone
            hub.publish([Change("/f/fam/t1", ChangeKind.meter, "m", 2, 3)], "running")
            await trio.testing.wait_all_tasks_blocked()
            assert sub.pending() == 1  # one delta, held for the interval
            mock_clock.jump(0.2)
            second = json.loads(await ws.get_message())
            assert [c["new"] for c in first["changes"]] == [1]
            assert [c["new"] for c in second["changes"]] == [2, 3]
            assert second["seq"] == first["seq"] + 1
        finally:
            # A failure leaves the connection open: let its idle timeout end it.
            mock_clock.autojump_threshold = 0


async def test_idle_connection_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    service, _, _ = make_service(idle_timeout=30)
    async with ws_session(service) as ws:
        assert (await ask(ws, req(1, "ping")))["ok"]
        before = trio.current_time()
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        assert info.value.reason.reason == "idle timeout"
        assert trio.current_time() - before == pytest.approx(30)


async def test_a_subscribed_connection_outlives_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service, _, _ = make_service(idle_timeout=30)
    async with ws_session(service, READ_TOKEN) as ws:
        reply = await ask(ws, req(1, "subscribe"))
        assert reply["ok"] and json.loads(await ws.get_message())["type"] == "snapshot"
        await trio.sleep(100)  # nothing said, but a subscription to serve
        assert service.connections == 1
        unsubscribe = req(2, "unsubscribe", subscription=reply["result"]["subscription"])
        assert (await ask(ws, unsubscribe))["ok"]
        before = trio.current_time()
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            while True:
                await ws.get_message()  # the subscription's closed message, then the close
        assert info.value.reason is not None and info.value.reason.reason == "idle timeout"
        assert trio.current_time() - before == pytest.approx(30)


async def test_peer_that_reads_nothing_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    # Every delta sent at once (no interval to merge them), into a full queue.
    service, _, hub = make_service(send_timeout=20, outbox_size=1, max_buffer=2, delta_interval=0)
    async with ws_session(service, READ_TOKEN, lockstep=True) as ws:
        assert (await ask(ws, req(1, "subscribe")))["ok"]
        for i in range(50):
            hub.publish([Change("/f/fam/t1", ChangeKind.meter, "m", i, i + 1)], "running")
            await trio.testing.wait_all_tasks_blocked()
        assert service.connections == 1
        await trio.sleep(30)  # the client's queue is full: the server cannot send
        assert service.connections == 0
        with pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()


async def test_too_many_connections_close_1013() -> None:
    service, _, _ = make_service(max_connections=1)
    async with ws_session(service) as first:
        async with ws_session(service) as second:
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await second.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1013
        assert (await ask(first, req(1, "ping")))["ok"]


async def test_child_wait_over_websocket_does_not_block_other_requests() -> None:
    service, dispatcher, _ = make_service()
    body = {"path": "/f/fam/t1", "password": PASSWORD, "tryno": 1, "command": "wait",
            "args": {"expression": "t2 == complete"}}  # fmt: skip
    async with ws_session(service) as ws:
        await ws.send_message(json.dumps({"v": 1, "id": 1, "command": "child", "args": body}))
        assert (await ask(ws, req(2, "ping")))["id"] == 2
        dispatcher.release_waits.set()
        reply = json.loads(await ws.get_message())
        assert reply == {"v": 1, "id": 1, "ok": True, "result": {"holds": True}}


# ---------------------------------------------------------------- HTTP


def child_body(**overrides: Any) -> bytes:
    body = {"v": 1, "path": "/f/fam/t1", "password": PASSWORD, "tryno": 1,
            "command": "meter", "args": {"name": "m", "value": 4}}  # fmt: skip
    body.update(overrides)
    return json.dumps(body).encode()


async def test_post_child_ok() -> None:
    service, dispatcher, _ = make_service()
    status, reply, raw = await http_exchange(service, child_post(child_body()))
    assert status == 200 and reply == {"ok": True, "result": None}
    assert b"Content-Type: application/json" in raw
    assert dispatcher.bunch.find_node("/f/fam/t1").meters["m"].value == 4


async def test_post_child_expect_continue() -> None:
    service, dispatcher, _ = make_service()
    raw = child_post(child_body(), b"Expect: 100-continue\r\n")
    _, _, reply = await http_exchange(service, raw)
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert dispatcher.bunch.find_node("/f/fam/t1").meters["m"].value == 4


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (child_body(password="stale"), 403, "zombie"),
        (child_body(tryno=7), 403, "zombie"),
        (child_body(path="/f/nope"), 404, "not_found"),
        (b"{oops", 400, "bad_request"),
        (child_body(tryno="1"), 400, "bad_request"),
        (json.dumps({"path": "/f/fam/t1"}).encode(), 400, "bad_request"),
        (child_body(args={"name": "m", "value": 99}), 400, "bad_value"),
    ],
)
async def test_post_child_refusals(body: bytes, status: int, code: str) -> None:
    service, dispatcher, _ = make_service()
    before = dispatcher.fingerprint()
    got_status, reply, _ = await http_exchange(service, child_post(body))
    assert (got_status, reply["error"]["code"] if reply else None) == (status, code)
    assert dispatcher.fingerprint() == before


async def test_post_child_503_when_halted() -> None:
    service, dispatcher, _ = make_service()
    dispatcher.state = "halted"
    status, reply, _ = await http_exchange(service, child_post(child_body()))
    assert status == 503 and reply is not None and reply["error"]["code"] == "unavailable"


async def test_post_child_body_limits() -> None:
    service, _, _ = make_service(max_message_size=100)
    status, reply, _ = await http_exchange(service, child_post(child_body(pad="x" * 200)))
    assert status == 413 and reply is not None and reply["error"]["code"] == "too_large"
    raw = b"POST /child HTTP/1.1\r\nHost: t\r\n\r\n"
    assert (await http_exchange(service, raw))[0] == 411


async def test_child_wait_timeout_answers_503(autojump_clock: trio.testing.MockClock) -> None:
    service, _, _ = make_service(child_wait_timeout=60)
    body = child_body(command="wait", args={"expression": "1 == 1"})
    status, reply, _ = await http_exchange(service, child_post(body))
    assert status == 503 and reply is not None and reply["error"]["code"] == "unavailable"


@pytest.mark.parametrize("path", [b"/", b"/health", b"/health?x=1"])
async def test_health(path: bytes) -> None:
    service, _, _ = make_service()
    status, reply, _ = await http_exchange(
        service, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    assert status == 200 and reply is not None
    assert reply["ok"] is True and reply["service"] == "takler" and reply["version"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS hello on the plain port
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
        (b"GET /child HTTP/1.1\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 400),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 431),
    ],
)
async def test_garbage_gets_an_http_error_and_the_service_survives(raw: bytes, status: int) -> None:
    service, _, _ = make_service()
    got, reply, _ = await http_exchange(service, raw)
    assert got == status
    assert reply is not None and reply["ok"] is False and reply["error"]["code"] in ERROR_CODES
    assert (await http_exchange(service, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 200
    assert service.connections == 0


async def test_silent_connection_times_out(autojump_clock: trio.testing.MockClock) -> None:
    service, _, _ = make_service(handshake_timeout=5)
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"GET / HT")
    with trio.fail_after(10):
        await service.handle_stream(server)
    assert await client.receive_some() == b""


# ---------------------------------------------------------------- stopping


async def test_stop_answers_requests_in_progress_then_closes_1001() -> None:
    service, dispatcher, _ = make_service()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(service.serve, listeners)
        async with (
            open_client("127.0.0.1", port, token=OPERATOR_TOKEN) as idle,
            open_client("127.0.0.1", port, token=OPERATOR_TOKEN) as client,
        ):
            assert await idle.call("ping")
            waiting = trio.Event()

            async def held_wait() -> None:
                body = child_body(command="wait", args={"expression": "x"})
                status, reply, _ = await http_exchange(service, child_post(body))
                assert status == 503 and reply is not None
                assert reply["error"]["code"] == "unavailable"
                waiting.set()

            nursery.start_soon(held_wait)
            await trio.testing.wait_all_tasks_blocked()
            assert await client.call("stop") == {"stopping": True}
            await waiting.wait()
            with pytest.raises(UnreachableError, match="1001 server shutdown"):
                await idle.call("ping")
            with pytest.raises(OSError):  # no longer accepting
                await trio.open_tcp_stream("127.0.0.1", port)
    assert service.connections == 0
    assert not dispatcher.release_waits.is_set()


# ---------------------------------------------------------------- real sockets


async def _serve_tls(nursery: trio.Nursery, tmp_path: Any) -> tuple[int, str]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, cafile = tmp_path / "cert.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    ca.cert_pem.write_to_path(str(cafile))
    service, _, _ = make_service(ssl_context=server_ssl_context(certfile))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(service.serve, listeners)
    return port, str(cafile)


async def test_tls_on_a_real_socket(tmp_path: Any) -> None:
    async with trio.open_nursery() as nursery:
        port, cafile = await _serve_tls(nursery, tmp_path)
        async with open_client("127.0.0.1", port, token=READ_TOKEN, cafile=cafile) as client:
            assert (await client.call("ping"))["server_state"] == "running"
            assert (await client.call("show", path="/f/fam/t2"))["state"] == "queued"
        # Without the CA the certificate is not trusted.
        with pytest.raises(UnreachableError, match="CERTIFICATE_VERIFY_FAILED"):
            async with open_client("127.0.0.1", port, tls=True):
                pass
        # Plain WebSocket on the TLS port fails at once, with a hint.
        with pytest.raises(UnreachableError, match="a TLS port"):
            async with open_client("127.0.0.1", port, timeout=5):
                pass
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_https_post_child_with_curl(tmp_path: Any) -> None:
    async with trio.open_nursery() as nursery:
        port, cafile = await _serve_tls(nursery, tmp_path)
        command = ["curl", "-sS", "--max-time", "10", "--cacert", cafile,
                   "-H", "Content-Type: application/json", "--data-binary", child_body().decode(),
                   "-w", "\n%{http_code}", f"https://127.0.0.1:{port}/child"]  # fmt: skip
        proc = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
        body, _, code = proc.stdout.decode().rpartition("\n")
        assert code == "200", proc.stderr
        assert json.loads(body) == {"ok": True, "result": None}
        nursery.cancel_scope.cancel()
