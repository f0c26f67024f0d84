"""Security of the running server, end to end: a real TaklerServer on a loopback
port, real jobs (bash, curl under TLS), the real async client and command line.

User tokens and roles, job passwords and try numbers, TLS for users and jobs,
the binding warning and the audit log.
"""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from takler.client.child import ChildClient, ChildCommandError
from takler.client.client import Client, RemoteError, UnreachableError, open_client
from takler.client.discover import find_server
from takler.core import Flow, NodeStatus
from takler.protocol import Closed, Delta, Snapshot
from takler.server import TaklerServer
from tests.server.security_helpers import (
    Lines,
    clear_takler_env,
    cli,
    model,
    script,
    start_server,
    wait_for,
    write_pki,
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


@pytest.fixture
async def owner(served: TaklerServer) -> AsyncIterator[Client]:
    async with open_client("127.0.0.1", served.port, token=served.token) as client:
        yield client


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return write_pki(tmp_path)


# ---------------------------------------------------------------- user tokens


async def test_user_commands_need_a_valid_token(served: TaklerServer) -> None:
    before = model(served)
    async with open_client("127.0.0.1", served.port) as nobody:
        assert (await nobody.call("ping"))["flows"] == 1
        for command, args in (("show", {}), ("begin", {"path": "/b"}), ("token_list", {})):
            with pytest.raises(RemoteError) as info:
                await nobody.request(command, args)
            assert info.value.code == "unauthorized"
            assert "token" in info.value.message
        with pytest.raises(RemoteError) as info:
            await nobody.request("suspend", {"path": "/b"}, token="not-a-token")
        assert info.value.code == "unauthorized"
        with pytest.raises(RemoteError) as info:
            await nobody.call("auth", token="not-a-token")
        assert info.value.code == "unauthorized"
    async with open_client("127.0.0.1", served.port, token="wrong") as wrong:
        with pytest.raises(RemoteError) as info:
            await wrong.call("resume", path="/b")
        assert info.value.code == "unauthorized"
        assert (await wrong.call("auth", token=served.token)) == {
            "name": "owner",
            "role": "operator",
        }
        assert (await wrong.call("show", path="/b"))["name"] == "b"
    assert model(served) == before


async def test_a_read_token_may_look_but_not_touch_and_revoking_it_is_immediate(
    tmp_path: Path, served: TaklerServer, owner: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(served.home)
    code, out, _ = await cli(capsys, "token", "add", "viewer", "--role", "read", "--home", home)
    assert code == 0
    viewer_token = out.strip()
    assert len(viewer_token) >= 32
    before = model(served)
    async with open_client("127.0.0.1", served.port, token=viewer_token) as viewer:
        assert (await viewer.call("show", path="/b/f"))["name"] == "f"
        assert (await viewer.call("why", path="/b/f/t2"))["path"] == "/b/f/t2"
        assert await viewer.call("history", path="/b") == []
        assert await viewer.call("zombies") == []
        for command, args in (
            ("begin", {"path": "/b"}),
            ("alter", {"path": "/b", "kind": "variable", "name": "X", "value": "1"}),
            ("suspend", {"path": "/b/f"}),
            ("checkpoint", {}),
            ("token_add", {"name": "mine", "role": "operator"}),
            ("token_list", {}),
            ("stop", {}),
        ):
            with pytest.raises(RemoteError) as info:
                await viewer.request(command, args)
            assert info.value.code == "forbidden", command
            assert "read-only" in info.value.message
        assert model(served) == before
        async with viewer.subscribe("/b") as sub:
            assert isinstance(await sub.__anext__(), Snapshot)
            await owner.call("alter", path="/b/f/t1", kind="label", name="lab", value="one")
            delta = await sub.__anext__()
            assert isinstance(delta, Delta) and delta.changes[0]["new"] == "one"
            code, out, _ = await cli(capsys, "token", "revoke", "viewer", "--home", home)
            assert code == 0 and "revoked viewer" in out
            # The open connection loses its rights at once, its subscription too.
            with pytest.raises(RemoteError) as info:
                await viewer.call("show", path="/b")
            assert info.value.code == "unauthorized"
            await owner.call("alter", path="/b/f/t1", kind="label", name="lab", value="two")
            closed = await sub.__anext__()
            assert isinstance(closed, Closed) and closed.reason == "token revoked"
    async with open_client("127.0.0.1", served.port, token=viewer_token) as revoked:
        with pytest.raises(RemoteError) as info:
            await revoked.call("show")
        assert info.value.code == "unauthorized"


async def test_token_list_never_shows_a_token(
    served: TaklerServer, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(served.home)
    code, out, _ = await cli(capsys, "token", "add", "ci", "--home", home)
    assert code == 0
    ci_token = out.strip()
    for extra in ((), ("--json",)):
        code, out, _ = await cli(capsys, "token", "list", "--home", home, *extra)
        assert code == 0
        assert "ci" in out and "owner" in out and "operator" in out
        assert ci_token not in out and str(served.token) not in out
    rows = json.loads(out)
    assert {row["name"] for row in rows} == {"owner", "ci"}
    assert all(set(row) == {"name", "role", "created"} for row in rows)
    tokens_file = (served.home / "tokens.json").read_text()
    assert ci_token not in tokens_file and str(served.token) not in tokens_file


async def test_a_checkpoint_file_is_private(
    tmp_path: Path, served: TaklerServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    target.chmod(0o644)
    code, out, err = await cli(capsys, "checkpoint", str(target), "--home", str(served.home))
    assert "checkpoint written" in out
    assert code == 0, err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text())["flows"][0]["name"] == "b"


async def test_server_files_are_private_and_the_owner_token_survives_a_restart(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    first = TaklerServer(port=0, home=home, console=False)
    await first.start()
    try:
        for name in ("server.json", "tokens.json"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
        token = first.token
        assert token and json.loads((home / "server.json").read_text())["token"] == token
        viewer = first.auth.add("viewer", "read")
    finally:
        await first.aclose()
    second = TaklerServer(port=0, home=home, console=False)
    await second.start()
    assert second.token == token
    assert stat.S_IMODE((home / "server.json").stat().st_mode) == 0o600
    address = find_server(home)  # what a client of the same user finds on its own
    assert (address.port, address.token) == (second.port, token)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(second.run)
        async with open_client(address.host, address.port, token=address.token) as client:
            assert (await client.call("token_list"))[0]["name"] == "owner"
        async with open_client("127.0.0.1", second.port, token=viewer) as client:
            assert (await client.call("show"))["flows"] == []
        second.stop_now()


# ---------------------------------------------------------------- job passwords


def child_refusal(server: TaklerServer, path: str, password: str | None, tryno: int) -> str:
    """Send ``complete`` as a job would; return the refusal's message (403 zombie)."""
    client = ChildClient("127.0.0.1", server.port, path, password or "", tryno, timeout=5)
    with pytest.raises(ChildCommandError) as info:
        client.complete()
    assert (info.value.code, info.value.status) == ("zombie", 403), info.value
    return str(info.value)


async def test_child_commands_need_their_own_jobs_password_and_current_try(
    tmp_path: Path, served: TaklerServer, owner: Client
) -> None:
    flow = Flow("c")
    flow.add_parameter("TAKLER_HOME", tmp_path / "jobs")
    flow.add_parameter("TAKLER_TIMEOUT", 60)
    held = script(tmp_path, "held", "takler_wait 'd:never'")  # held until killed
    a, b = flow.add_task("a"), flow.add_task("b")
    for task in (a, b):
        task.add_parameter("TAKLER_SCRIPT", held)
    d = flow.add_task("d")
    d.add_event("never")
    d.add_parameter("TAKLER_SCRIPT", script(tmp_path, "quick", "true"))
    served.add_flows([flow])
    await owner.call("begin", path="/c")
    await wait_for(served, lambda: (a.status, b.status, d.status) == (
        NodeStatus.active, NodeStatus.active, NodeStatus.complete))  # fmt: skip
    refuse = trio.to_thread.run_sync

    before = model(served)
    message = await refuse(child_refusal, served, "/c/b", a.password, b.tryno)
    assert "password" in message
    message = await refuse(child_refusal, served, "/c/d", d.password, d.tryno)
    assert "not running" in message or "password" in message
    ws_child = {"path": "/c/a", "password": "guess", "tryno": a.tryno, "command": "abort"}
    with pytest.raises(RemoteError) as info:
        await owner.call("child", **ws_child)
    assert info.value.code == "zombie"
    assert model(served) == before

    # A stale try: the first job was killed and the task retried with a new password.
    first_password = a.password
    await owner.call("kill", path="/c/a")
    await wait_for(served, lambda: a.tryno == 2 and a.status is NodeStatus.active)
    before = model(served)
    await refuse(child_refusal, served, "/c/a", first_password, 1)
    message = await refuse(child_refusal, served, "/c/a", a.password, 1)
    assert "try 1 is not the current try 2" in message
    assert model(served) == before

    # A requeue and a new submission: the running job's credentials go stale.
    second_password = a.password
    await owner.call("requeue", path="/c/a", force=True)
    await wait_for(served, lambda: a.status is NodeStatus.active and a.password != second_password)
    before = model(served)
    await refuse(child_refusal, served, "/c/a", second_password, 2)
    assert model(served) == before

    zombies = await owner.call("zombies")
    assert {"/c/a", "/c/b", "/c/d"} <= {z["path"] for z in zombies}
    assert all(z["count"] >= 1 and z["reason"] for z in zombies)
    logged = (served.home / "takler.log").read_text()
    for path in ("/c/a", "/c/b", "/c/d"):
        assert f"zombie complete {path}" in logged
    viewer = served.auth.add("viewer", "read")
    async with open_client("127.0.0.1", served.port, token=viewer) as client:
        shown = json.dumps(await client.call("show", path="/c", secrets=True))
    assert "password" not in shown and str(a.password) not in shown
    await owner.call("kill", path="/c")


# ---------------------------------------------------------------- TLS


def tls_flow(tmp_path: Path) -> Flow:
    flow = Flow("s")
    flow.add_parameter("TAKLER_HOME", tmp_path / "jobs")
    flow.add_parameter("TAKLER_TIMEOUT", 20)
    producer = flow.add_task("producer")
    producer.add_event("ready")
    producer.add_meter("step", 0, 3)
    producer.add_label("note", "")
    body = "takler_label note secure\ntakler_event ready\nfor i in 1 2 3; do takler_meter step $i; done"
    producer.add_parameter("TAKLER_SCRIPT", script(tmp_path, "producer", body))
    consumer = flow.add_task("consumer")
    consumer.add_trigger("producer:ready")
    consumer.add_parameter("TAKLER_SCRIPT", script(tmp_path, "consumer", "true"))
    return flow


async def test_tls_for_users_and_jobs(
    tmp_path: Path, pki: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server = TaklerServer(
        port=0, home=tmp_path / "home", console=False,
        certfile=pki["cert"], keyfile=pki["key"], job_cafile=pki["ca"],
    )  # fmt: skip
    flow = tls_flow(tmp_path)
    server.add_flows([flow])
    await server.start()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        with pytest.raises(UnreachableError):
            async with open_client("127.0.0.1", server.port, token=server.token, timeout=5):
                pass
        with pytest.raises(UnreachableError, match="certificate"):
            async with open_client("127.0.0.1", server.port, token=server.token, tls=True):
                pass
        plain_job = ChildClient("127.0.0.1", server.port, "/s/producer", "x", 1, timeout=1)
        with pytest.raises(ChildCommandError) as info:
            await trio.to_thread.run_sync(plain_job.init, 1)
        assert info.value.code == "unreachable"
        cafile = str(pki["ca"])
        async with open_client("127.0.0.1", server.port, token=server.token, cafile=cafile) as c:
            assert (await c.call("ping"))["flows"] == 1
            await c.call("begin", path="/s")
            await wait_for(server, lambda: flow.state is NodeStatus.complete)
        producer = flow.find_node("producer")
        assert producer.meters["step"].value == 3 and producer.labels["note"].value == "secure"
        job = (tmp_path / "jobs" / "s" / "producer.job1").read_text()
        assert f"export TAKLER_CAFILE={cafile}" in job
        # Clients of the same user find the server, its token and its CA on their own.
        code, out, err = await cli(capsys, "ping", "--home", str(server.home))
        assert code == 0, err
        assert "running" in out
        server.stop_now()


async def test_tls_jobs_may_trust_the_server_certificate_itself(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    server = TaklerServer(
        port=0, home=tmp_path / "home", console=False, certfile=pki["cert"], keyfile=pki["key"]
    )
    flow = tls_flow(tmp_path)
    server.add_flows([flow], begin=True)
    await server.start()
    assert server.bunch.parameters["TAKLER_CAFILE"] == str(pki["cert"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        await wait_for(server, lambda: flow.state is NodeStatus.complete)
        pinned = ChildClient(
            "127.0.0.1", server.port, "/s/nothing", "x", 1, timeout=5, cafile=str(pki["cert"])
        )
        with pytest.raises(ChildCommandError) as info:
            await trio.to_thread.run_sync(pinned.complete)
        assert info.value.code == "not_found"  # TLS held: the server answered
        server.stop_now()


# ---------------------------------------------------------------- binding and audit


async def test_binding_beyond_loopback_without_tls_warns(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    quiet: list[dict[str, Any]] = [{}, {"host": "127.0.0.1"}, {"host": "::1"},
             {"host": "0.0.0.0", "certfile": pki["cert"], "keyfile": pki["key"]}]  # fmt: skip
    with Lines("takler.server") as logged:
        for n, kwargs in enumerate(quiet):
            server = TaklerServer(port=0, home=tmp_path / f"ok{n}", console=False, **kwargs)
            await server.start()
            await server.aclose()
        assert not [line for line in logged.lines if "without TLS" in line]
        server = TaklerServer(host="0.0.0.0", port=0, home=tmp_path / "open", console=False)
        await server.start()
        await server.aclose()
    warnings = [line for line in logged.lines if "without TLS" in line]
    assert warnings == [
        "listening on 0.0.0.0 without TLS: tokens and job passwords cross the network in clear;"
        " use --certfile/--keyfile"
    ]


async def test_every_user_command_is_audited(served: TaklerServer, owner: Client) -> None:
    viewer = served.auth.add("viewer", "read")
    with Lines("takler.audit") as audit:
        await owner.call("suspend", path="/b/f")
        with pytest.raises(RemoteError):
            await owner.call("resume", path="/b/nothing")
        async with open_client("127.0.0.1", served.port, token=viewer) as client:
            await client.call("show", path="/b/f/t1")
            with pytest.raises(RemoteError):
                await client.call("begin", path="/b")
        async with open_client("127.0.0.1", served.port) as client:
            with pytest.raises(RemoteError):
                await client.call("requeue", path="/b")
        with pytest.raises(RemoteError):
            await owner.call("suspend", path="/b\nowner stop / ok")
    # Reads that succeed are logged at DEBUG, below the server's INFO level.
    assert audit.lines == [
        "owner suspend /b/f ok",
        "owner resume /b/nothing not_found",
        "viewer begin /b forbidden",
        "anonymous requeue /b unauthorized",
        "owner suspend '/b\\nowner stop / ok' not_found",  # a forged line stays in quotes
    ]
    logged = (served.home / "takler.log").read_text()
    assert "takler.audit: viewer begin /b forbidden" in logged


async def test_serve_refuses_a_cafile_without_a_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow_file = tmp_path / "flow.py"
    code, _, err = await cli(capsys, "serve", str(flow_file), "--cafile", str(tmp_path / "ca.pem"))
    assert code == 2
    assert "--cafile needs --certfile" in err
