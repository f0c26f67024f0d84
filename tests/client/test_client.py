"""The async client against the real service (fake dispatcher), and server discovery."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from takler.client.client import Client, RemoteError, UnreachableError, open_client
from takler.client.discover import ServerAddress, find_server, takler_home
from takler.core.change import Change, ChangeKind
from takler.core.errors import InvalidValueError
from takler.protocol import Closed, Delta, Snapshot
from takler.server.service import Service
from tests.server.fake_dispatcher import OPERATOR_TOKEN, READ_TOKEN, make_service


@asynccontextmanager
async def connect(
    service: Service, token: str | None = OPERATOR_TOKEN, **kwargs: Any
) -> AsyncIterator[Client]:
    async with trio.open_nursery() as nursery:

        async def factory() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(service.handle_stream, server_end)
            return client_end

        async with open_client("test", 1, token=token, stream_factory=factory, **kwargs) as client:
            yield client
        nursery.cancel_scope.cancel()


async def test_call_returns_results_and_raises_remote_errors() -> None:
    service, _, _ = make_service()
    async with connect(service) as client:
        assert (await client.call("ping"))["server_state"] == "running"
        assert await client.call("show", path="/f/fam/t2") == {
            "kind": "task",
            "name": "t2",
            "state": "queued",
        }
        with pytest.raises(RemoteError) as info:
            await client.call("why", path="/f/none")
        assert info.value.code == "not_found" and "/f/none" in info.value.message
        with pytest.raises(RemoteError) as info:
            await client.call("frobnicate")
        assert info.value.code == "unknown_command"
        assert await client.call("ping")  # still usable


async def test_tokens_per_connection_and_per_request() -> None:
    service, _, _ = make_service()
    async with connect(service, token=READ_TOKEN) as client:
        with pytest.raises(RemoteError) as info:
            await client.call("suspend", path="/f")
        assert info.value.code == "forbidden"
        assert await client.request("suspend", {"path": "/f"}, token=OPERATOR_TOKEN) is None
    async with connect(service, token=None) as client:
        with pytest.raises(RemoteError) as info:
            await client.call("show")
        assert info.value.code == "unauthorized"


async def test_concurrent_calls_are_routed_by_id() -> None:
    service, _, _ = make_service()
    results: dict[str, Any] = {}
    async with connect(service) as client:

        async def show(path: str) -> None:
            results[path] = await client.call("show", path=path)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                for path in ("/f", "/f/fam", "/f/fam/t1", "/f/fam/t2"):
                    nursery.start_soon(show, path)
    assert {path: r["name"] for path, r in results.items()} == {
        "/f": "f",
        "/f/fam": "fam",
        "/f/fam/t1": "t1",
        "/f/fam/t2": "t2",
    }


async def test_subscribe_snapshot_deltas_and_unsubscribe_on_exit() -> None:
    service, _, hub = make_service()
    async with connect(service) as client:
        async with client.subscribe("/f/fam/t2") as sub:
            assert sub.id is not None and len(hub) == 1
            first = await sub.__anext__()
            assert isinstance(first, Snapshot) and first.data["name"] == "t2"
            await client.call("suspend", path="/f/fam/t2")
            delta = await sub.__anext__()
            assert isinstance(delta, Delta) and delta.seq == 1
            assert ("/f/fam/t2", "suspended") in [(c["path"], c["kind"]) for c in delta.changes]
            assert delta.server == {"state": "running"}
        assert len(hub) == 0
        assert await client.call("ping")


async def test_server_drop_ends_subscription_with_closed() -> None:
    service, _, hub = make_service()
    async with connect(service) as client, client.subscribe() as sub:
        assert isinstance(await sub.__anext__(), Snapshot)
        hub.close_all("server shutdown")
        messages = [m async for m in sub]
    assert messages == [Closed(sub.id or 0, "server shutdown")]


async def test_lost_connection_fails_calls_and_subscriptions() -> None:
    service, _, _ = make_service()
    async with trio.open_nursery() as nursery:
        cancel = trio.CancelScope()

        async def serve(stream: trio.abc.Stream) -> None:
            with cancel:
                await service.handle_stream(stream)

        async def factory() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(serve, server_end)
            return client_end

        async with open_client("test", 1, token=OPERATOR_TOKEN, stream_factory=factory) as client:
            async with client.subscribe("/f") as sub:
                assert isinstance(await sub.__anext__(), Snapshot)
                cancel.cancel()  # the server goes away
                closed = await sub.__anext__()
                assert isinstance(closed, Closed)
                with pytest.raises(UnreachableError):
                    await client.call("ping")


async def test_no_reply_in_time(autojump_clock: trio.testing.MockClock) -> None:
    service, dispatcher, _ = make_service()

    async def stuck(command: str, args: dict[str, Any], identity: Any) -> Any:
        await trio.sleep_forever()

    dispatcher.execute = stuck  # type: ignore[method-assign]
    async with connect(service, timeout=3.0) as client:
        await trio.sleep(10)  # the connection idle meanwhile
        before = trio.current_time()
        with pytest.raises(UnreachableError, match="no reply to show within 3 s"):
            await client.call("show")
        assert trio.current_time() - before == pytest.approx(3.0)


async def test_unreachable_port() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    with pytest.raises(UnreachableError, match=f"127.0.0.1:{port}"):
        async with open_client("127.0.0.1", port, timeout=5.0):
            pass


async def test_user_errors_pass_through_unwrapped() -> None:
    service, _, _ = make_service()
    async with trio.open_nursery() as nursery:

        async def factory() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(service.handle_stream, server_end)
            return client_end

        with pytest.raises(KeyError):
            async with open_client("test", 1, stream_factory=factory) as client:
                await client.call("ping")
                raise KeyError("mine")
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- discovery


def server_json(home: Path, **fields: Any) -> None:
    data = {"host": "127.0.0.1", "port": 5123, "token": "file-token", "pid": 1,
            "version": "0.2.0", "tls": False}  # fmt: skip
    data.update(fields)
    (home / "server.json").write_text(json.dumps(data))


def test_find_server_reads_server_json(tmp_path: Path) -> None:
    server_json(tmp_path)
    assert find_server(tmp_path, environ={}) == ServerAddress("127.0.0.1", 5123, "file-token")


def test_find_server_precedence(tmp_path: Path) -> None:
    server_json(tmp_path, host="0.0.0.0", tls=True)
    env = {"TAKLER_HOME": str(tmp_path), "TAKLER_PORT": "6000", "TAKLER_TOKEN": "env-token"}
    address = find_server(environ=env)
    # Another port: the file's token and TLS flag belong to another server.
    assert address == ServerAddress("127.0.0.1", 6000, "env-token", None, False)
    assert find_server(environ={"TAKLER_HOME": str(tmp_path)}) == ServerAddress(
        "127.0.0.1", 5123, "file-token", None, True
    )
    address = find_server(port=7000, token="arg", cafile="/ca.pem", environ=env)
    assert address == ServerAddress("127.0.0.1", 7000, "arg", "/ca.pem", True)
    env = {"TAKLER_HOME": str(tmp_path), "TAKLER_HOST": "far.example", "TAKLER_PORT": "5123"}
    assert find_server(environ=env).token is None  # never sent to another host


def test_find_server_without_a_server(tmp_path: Path) -> None:
    with pytest.raises(UnreachableError, match=r"server\.json"):
        find_server(tmp_path, environ={})
    with pytest.raises(InvalidValueError, match="TAKLER_PORT"):
        find_server(tmp_path, environ={"TAKLER_PORT": "http"})


def test_takler_home(tmp_path: Path) -> None:
    assert takler_home(tmp_path, {}) == tmp_path
    assert takler_home(None, {"TAKLER_HOME": str(tmp_path)}) == tmp_path
    assert takler_home(None, {}) == Path.home() / ".takler"


# ---------------------------------------------------------------- load


@pytest.mark.e2e
async def test_load_100_clients_on_loopback() -> None:
    service, _, hub = make_service()
    clients, burst, subscribed = 100, 20, 20
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    answered = deltas = done = 0
    all_done = trio.Event()

    async def run_burst(client: Client) -> None:
        nonlocal answered, done
        for i in range(burst):
            if i % 2:
                assert (await client.call("ping"))["flows"] == 1
            else:
                assert (await client.call("show", path="/f/fam"))["name"] == "fam"
            answered += 1
        done += 1
        if done == clients:
            all_done.set()

    async def user(n: int) -> None:
        nonlocal deltas
        async with open_client("127.0.0.1", port, token=OPERATOR_TOKEN, timeout=30) as client:
            if n >= subscribed:
                await run_burst(client)
                return
            async with client.subscribe("/f") as sub:
                assert isinstance(await sub.__anext__(), Snapshot)
                await run_burst(client)
                message = await sub.__anext__()
                assert isinstance(message, Delta)
                assert message.changes[0]["new"] == "last"
                deltas += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(service.serve, listeners)
        start = time.perf_counter()
        with trio.fail_after(60):
            async with trio.open_nursery() as users:
                for n in range(clients):
                    users.start_soon(user, n)
                await all_done.wait()
                hub.publish([Change("/f/fam/t1", ChangeKind.label, "lab", "", "last")], "running")
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    assert answered == clients * burst
    assert deltas == subscribed
    print(f"\n{answered} requests from {clients} clients in {elapsed:.2f} s: "
          f"{answered / elapsed:.0f} requests/s")  # fmt: skip
