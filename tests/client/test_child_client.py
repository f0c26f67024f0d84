"""The Python child client and ``takler child`` against a fake server."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from takler.client.child import ChildClient, ChildCommandError
from takler_cli.child import main


class FakeServer:
    """Records POSTed child commands and answers with scripted replies."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict] = []
        self.replies: list[tuple[int, dict]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with fake.lock:
                    fake.requests.append(json.loads(body))
                    status, reply = (
                        fake.replies.pop(0) if fake.replies else (200, {"ok": True, "result": None})
                    )
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]


def serve(fake: FakeServer) -> Iterator[FakeServer]:
    thread = threading.Thread(target=fake.httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()
    thread.join()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    yield from serve(FakeServer())


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[FakeServer, Path]]:
    """A fake server speaking HTTPS, and the CA file that verifies it."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    for fake in serve(FakeServer(context)):
        yield fake, cafile


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_client(port: int, fake_time: FakeTime, timeout: float = 86400.0) -> ChildClient:
    return ChildClient(
        "127.0.0.1",
        port,
        "/flow/fam/t1",
        "s3cret",
        2,
        timeout=timeout,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
    )


@pytest.mark.parametrize(
    ("call", "command", "args"),
    [
        (lambda c: c.init(1234), "init", {"pid": 1234}),
        (lambda c: c.init(None), "init", {"pid": None}),
        (lambda c: c.event("e1"), "event", {"name": "e1", "value": True}),
        (lambda c: c.event("e1", False), "event", {"name": "e1", "value": False}),
        (lambda c: c.meter("m", 5), "meter", {"name": "m", "value": 5}),
        (
            lambda c: c.label("l", 'say "hi" \\ ok\nnext é ✓'),
            "label",
            {"name": "l", "text": 'say "hi" \\ ok\nnext é ✓'},
        ),
        (lambda c: c.wait("t0 == complete"), "wait", {"expression": "t0 == complete"}),
        (lambda c: c.complete(), "complete", {}),
        (lambda c: c.abort("disk full"), "abort", {"reason": "disk full"}),
        (lambda c: c.abort(), "abort", {"reason": ""}),
    ],
)
def test_each_command_sends_its_json(server, call, command, args) -> None:
    fake_time = FakeTime()
    call(make_client(server.port, fake_time))
    assert server.requests == [
        {
            "v": 1,
            "path": "/flow/fam/t1",
            "password": "s3cret",
            "tryno": 2,
            "command": command,
            "args": args,
        }
    ]
    assert fake_time.sleeps == []


def test_send_returns_the_result(server) -> None:
    server.replies = [(200, {"ok": True, "result": {"held": 3}})]
    assert make_client(server.port, FakeTime()).wait("a == complete") == {"held": 3}


def test_refusal_is_not_retried(server) -> None:
    error = {"code": "zombie", "message": "try 2 is not the current try 3"}
    server.replies = [(403, {"ok": False, "error": error})]
    fake_time = FakeTime()
    with pytest.raises(ChildCommandError) as info:
        make_client(server.port, fake_time).complete()
    assert (info.value.code, info.value.status) == ("zombie", 403)
    assert "try 2 is not the current try 3" in str(info.value)
    assert len(server.requests) == 1
    assert fake_time.sleeps == []


def test_unready_server_is_retried(server) -> None:
    error = {"code": "halted", "message": "server is halted"}
    server.replies = [(503, {"ok": False, "error": error}), (503, {"ok": False, "error": error})]
    fake_time = FakeTime()
    make_client(server.port, fake_time).event("e1")
    assert len(server.requests) == 3
    assert 0.08 <= fake_time.sleeps[0] <= 0.12
    assert 0.16 <= fake_time.sleeps[1] <= 0.24


def test_unreachable_server_backs_off_until_the_timeout() -> None:
    fake_time = FakeTime()
    with pytest.raises(ChildCommandError) as info:
        make_client(refused_port(), fake_time, timeout=60.0).init(1)
    assert info.value.code == "unreachable"
    assert info.value.status is None
    assert "refused" in str(info.value)
    assert sum(fake_time.sleeps) == pytest.approx(60.0)
    for sleep, nominal in zip(
        fake_time.sleeps[:9], [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10], strict=True
    ):
        assert nominal * 0.8 <= sleep <= nominal * 1.2
    assert max(fake_time.sleeps) <= 12.0


def test_from_env_prefers_takler_names_and_falls_back_to_ecflow() -> None:
    client = ChildClient.from_env(
        {
            "TAKLER_HOST": "h1",
            "ECF_HOST": "h2",
            "ECF_PORT": "3141",
            "ECF_NAME": "/s/f/t",
            "ECF_PASS": "pw",
            "TAKLER_TRYNO": "4",
            "TAKLER_TIMEOUT": "30",
            "TAKLER_CAFILE": "/ca.pem",
        }
    )
    assert (client.host, client.port, client.path, client.password) == ("h1", 3141, "/s/f/t", "pw")
    assert (client.tryno, client.timeout, client.cafile) == (4, 30.0, "/ca.pem")


@pytest.mark.parametrize(
    "environ",
    [
        {"TAKLER_PORT": "1", "TAKLER_NAME": "/t"},
        {"TAKLER_PORT": "x", "TAKLER_NAME": "/t", "TAKLER_TRYNO": "1"},
    ],
)
def test_from_env_rejects_a_bad_environment(environ) -> None:
    with pytest.raises(ChildCommandError) as info:
        ChildClient.from_env(environ)
    assert info.value.code == "bad_environment"


@pytest.fixture
def job_env(monkeypatch, server) -> None:
    for name, value in {
        "TAKLER_HOST": "127.0.0.1",
        "TAKLER_PORT": str(server.port),
        "TAKLER_NAME": "/flow/t1",
        "TAKLER_PASSWORD": "pw",
        "TAKLER_TRYNO": "1",
        "TAKLER_RID": "777",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("argv", "command", "args"),
    [
        (["init"], "init", {"pid": 777}),
        (["init", "42"], "init", {"pid": 42}),
        (["event", "e1"], "event", {"name": "e1", "value": True}),
        (["event", "e1", "clear"], "event", {"name": "e1", "value": False}),
        (["meter", "m", "-3"], "meter", {"name": "m", "value": -3}),
        (["label", "l", "hello", "world"], "label", {"name": "l", "text": "hello world"}),
        (["wait", "t0", "==", "complete"], "wait", {"expression": "t0 == complete"}),
        (["complete"], "complete", {}),
        (["abort", "out", "of", "disk"], "abort", {"reason": "out of disk"}),
    ],
)
def test_cli_sends_each_command(server, job_env, argv, command, args) -> None:
    assert main(argv) == 0
    assert [(r["command"], r["args"]) for r in server.requests] == [(command, args)]


def test_cli_options_override_the_environment(server, job_env) -> None:
    argv = ["--path", "/other/t2", "complete", "--tryno", "5", "--password", "x"]
    assert main(argv) == 0
    request = server.requests[0]
    assert (request["path"], request["tryno"], request["password"]) == ("/other/t2", 5, "x")


def test_cli_exit_codes(server, job_env, capsys) -> None:
    server.replies = [(404, {"ok": False, "error": {"code": "not_found", "message": "no /x"}})]
    assert main(["complete"]) == 1
    assert (
        capsys.readouterr().err
        == "takler child complete: complete refused (404 not_found): no /x\n"
    )
    assert main(["meter", "m", "lots"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["event", "e1", "--port", str(refused_port()), "--timeout", "0"]) == 4
    assert "refused" in capsys.readouterr().err


def test_tls(tls_server) -> None:
    fake, cafile = tls_server
    client = make_client(fake.port, FakeTime())
    client.cafile = str(cafile)
    client.label("l", "over TLS")
    assert fake.requests[0]["args"] == {"name": "l", "text": "over TLS"}
