"""The bash child commands (include/child.takler, bin/ecflow_client) and a
whole job rendered from the standard head and tail, against a fake server."""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from takler.tasks.render import default_include_dir, job_bin_dir, render_job, write_job

CHILD = default_include_dir() / "child.takler"
ECFLOW_CLIENT = job_bin_dir() / "ecflow_client"
LABEL_TEXT = 'say "hi" \\ C:\\dir\nnext line\ttab é ✓ & done'


class FakeServer:
    """Records child commands (JSON and headers) and answers scripted replies."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.replies: list[tuple[int, dict]] = []
        self.content_length = True
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                fake.headers.append(dict(self.headers))
                fake.requests.append(json.loads(raw))
                status, reply = (
                    fake.replies.pop(0) if fake.replies else (200, {"ok": True, "result": None})
                )
                self._reply(status, reply)

            def do_GET(self) -> None:
                self._reply(426, {"ok": False, "error": {"code": "upgrade", "message": "ws"}})

            def _reply(self, status: int, reply: dict) -> None:
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if fake.content_length:
                    self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # bash reads the status line of a 200, then closes: as designed
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]

    def commands(self) -> list[tuple[str, dict]]:
        return [(r["command"], r["args"]) for r in self.requests]


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


def job_env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAKLER_", "ECF_"))}
    env.update(
        TAKLER_HOST="127.0.0.1",
        TAKLER_PORT=str(port),
        TAKLER_NAME="/flow/fam/t1",
        TAKLER_PASSWORD='pa"ss',
        TAKLER_TRYNO="3",
        LANG="C.UTF-8",
    )
    env.update(extra)
    return env


def bash(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'set -eu; source "{CHILD}"; {code}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


COMMANDS = [
    ("takler_init 123", "init", {"pid": 123}),
    ("takler_init", "init", {"pid": 4242}),
    ("takler_event e1", "event", {"name": "e1", "value": True}),
    ("takler_event e1 clear", "event", {"name": "e1", "value": False}),
    ("takler_meter m 5", "meter", {"name": "m", "value": 5}),
    ("takler_meter m -007", "meter", {"name": "m", "value": -7}),
    ('takler_label l "$TEXT"', "label", {"name": "l", "text": LABEL_TEXT}),
    ("takler_label l hello   world", "label", {"name": "l", "text": "hello world"}),
    ("takler_wait 't0 == complete'", "wait", {"expression": "t0 == complete"}),
    ("takler_complete", "complete", {}),
    ("takler_abort", "abort", {"reason": ""}),
    ("takler_abort disk full", "abort", {"reason": "disk full"}),
]


@pytest.mark.parametrize(("code", "command", "args"), COMMANDS)
def test_bash_functions_send_exact_json(server, code, command, args) -> None:
    result = bash(code, job_env(server.port, TEXT=LABEL_TEXT, TAKLER_RID="4242"))
    assert (result.returncode, result.stderr) == (0, "")
    assert server.requests == [
        {
            "v": 1,
            "path": "/flow/fam/t1",
            "password": 'pa"ss',
            "tryno": 3,
            "command": command,
            "args": args,
        }
    ]
    headers = server.headers[0]
    assert headers["Host"] == f"127.0.0.1:{server.port}"
    assert headers["Content-Type"] == "application/json"


def test_every_control_character_is_escaped(server) -> None:
    text = "".join(chr(i) for i in range(1, 32)) + "\x7f end"
    result = bash('takler_label l "$TEXT"', job_env(server.port, TEXT=text))
    assert result.returncode == 0, result.stderr
    assert server.requests[0]["args"]["text"] == text


def test_reply_without_content_length(server) -> None:
    server.content_length = False
    assert bash("takler_event e1", job_env(server.port)).returncode == 0


def test_refusal_is_not_retried(server) -> None:
    error = {"code": "zombie", "message": 'try 3 is not current (\\"4\\")'}
    server.replies = [(403, {"ok": False, "error": error})]
    result = bash("takler_complete || echo rc=$?", job_env(server.port))
    assert result.stdout == "rc=1\n"
    assert (
        result.stderr
        == 'takler_child: complete refused (403 zombie): try 3 is not current (\\"4\\")\n'
    )
    assert len(server.requests) == 1


def test_rare_parts_load_when_sourced_by_a_relative_path(server, tmp_path) -> None:
    # child_more.takler is found from where child.takler was sourced, even
    # after the shell changed folder.
    error = {"code": "zombie", "message": "not current"}
    server.replies = [(403, {"ok": False, "error": error})]
    code = f'cd "{CHILD.parent}"; . ./child.takler; cd "{tmp_path}"; takler_label l "a\tb" || echo rc=$?'
    result = subprocess.run(
        ["bash", "-c", f"set -eu; {code}"],
        env=job_env(server.port),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.stdout == "rc=1\n"
    assert result.stderr == "takler_child: label refused (403 zombie): not current\n"
    assert server.requests[0]["args"] == {"name": "l", "text": "a\tb"}


def test_unready_server_is_retried(server) -> None:
    server.replies = [(503, {"ok": False, "error": {"code": "halted", "message": "halted"}})]
    result = bash("takler_event e1", job_env(server.port))
    assert (result.returncode, result.stderr) == (0, "")
    assert server.commands() == [("event", {"name": "e1", "value": True})] * 2


def test_unreachable_server_fails_after_the_timeout() -> None:
    started = time.monotonic()
    result = bash("takler_event e1", job_env(refused_port(), TAKLER_TIMEOUT="1"))
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "takler_child: event failed after 1 s:" in result.stderr
    assert "Connection refused" in result.stderr
    assert elapsed < 2.0


def test_curl_fallback_sends_the_same_json(server) -> None:
    result = bash(
        '_TAKLER_NO_DEVTCP=1; takler_label l "$TEXT"', job_env(server.port, TEXT=LABEL_TEXT)
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert server.commands() == [("label", {"name": "l", "text": LABEL_TEXT})]


def test_xtrace_does_not_show_the_password(server) -> None:
    result = bash("set -x; takler_event e1", job_env(server.port, TAKLER_PASSWORD="hush"))
    assert result.returncode == 0
    assert "hush" not in result.stderr


def test_usage_errors(server) -> None:
    env = job_env(server.port)
    assert bash("takler_meter m lots || echo rc=$?", env).stdout == "rc=2\n"
    assert bash("takler_event e1 maybe || echo rc=$?", env).stdout == "rc=2\n"
    assert server.requests == []


@pytest.mark.parametrize(
    ("argv", "command", "args"),
    [
        (["--init=123"], "init", {"pid": 123}),
        (["--init", "123"], "init", {"pid": 123}),
        (["--event=e1"], "event", {"name": "e1", "value": True}),
        (["--event=e1", "clear"], "event", {"name": "e1", "value": False}),
        (["--meter=m", "5"], "meter", {"name": "m", "value": 5}),
        (["--label=l", "hello", "world"], "label", {"name": "l", "text": "hello world"}),
        (["--label=l", LABEL_TEXT], "label", {"name": "l", "text": LABEL_TEXT}),
        (["--wait=t0 == complete"], "wait", {"expression": "t0 == complete"}),
        (["--abort=it broke"], "abort", {"reason": "it broke"}),
        (["--abort"], "abort", {"reason": ""}),
        (["--complete"], "complete", {}),
    ],
)
def test_ecflow_client_sends_exact_json(server, argv, command, args) -> None:
    env = job_env(server.port)
    for name in ("HOST", "PORT", "NAME", "TRYNO"):
        env[f"ECF_{name}"] = env.pop(f"TAKLER_{name}")
    env["ECF_PASS"] = env.pop("TAKLER_PASSWORD")
    result = subprocess.run([ECFLOW_CLIENT, *argv], env=env, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
    request = server.requests[0]
    assert (request["path"], request["password"], request["tryno"]) == ("/flow/fam/t1", 'pa"ss', 3)
    assert server.commands() == [(command, args)]


def test_ecflow_client_errors(server) -> None:
    env = job_env(server.port)
    unknown = subprocess.run([ECFLOW_CLIENT, "--alter"], env=env, capture_output=True, text=True)
    assert unknown.returncode == 1
    assert "unknown option '--alter'" in unknown.stderr
    server.replies = [(404, {"ok": False, "error": {"code": "not_found", "message": "no task"}})]
    refused = subprocess.run([ECFLOW_CLIENT, "--complete"], env=env, capture_output=True, text=True)
    assert (refused.returncode, refused.stderr) == (
        1,
        "takler_child: complete refused (404 not_found): no task\n",
    )
    ping = subprocess.run([ECFLOW_CLIENT, "--ping"], env=env, capture_output=True, text=True)
    assert ping.returncode == 0
    assert ping.stdout.startswith(f"ping server(127.0.0.1:{server.port}) succeeded")
    env["TAKLER_PORT"] = str(refused_port())
    down = subprocess.run([ECFLOW_CLIENT, "--ping"], env=env, capture_output=True, text=True)
    assert down.returncode == 1


def run_job(tmp_path: Path, port: int, body: str) -> tuple[subprocess.CompletedProcess[str], str]:
    script = tmp_path / "t1.takler"
    script.write_text(f'{{% include "head.takler" %}}\n{body}{{% include "tail.takler" %}}\n')
    variables = {
        "TAKLER_HOST": "127.0.0.1",
        "TAKLER_PORT": str(port),
        "TAKLER_NAME": "/flow/t1",
        "TAKLER_PASSWORD": "pw",
        "TAKLER_TRYNO": "1",
        "TAKLER_TIMEOUT": "5",
    }
    job = tmp_path / "t1.job1"
    write_job(render_job(script, variables), job)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAKLER_", "ECF_"))}
    env["PATH"] = f"{job_bin_dir()}:{env['PATH']}"
    result = subprocess.run(["bash", job], env=env, capture_output=True, text=True, timeout=20)
    return result, job.read_text()


def test_job_sends_init_then_complete(server, tmp_path) -> None:
    result, _ = run_job(tmp_path, server.port, "takler_event e1\necflow_client --meter=m 2\n")
    assert (result.returncode, result.stderr) == (0, "")
    commands = server.commands()
    assert [c for c, _ in commands] == ["init", "event", "meter", "complete"]
    assert commands[0][1]["pid"] > 1


def test_failing_job_aborts_with_the_line_number(server, tmp_path) -> None:
    result, text = run_job(tmp_path, server.port, "echo working\nfalse\necho not reached\n")
    line = text.splitlines().index("false") + 1
    assert result.returncode == 1
    assert "not reached" not in result.stdout
    assert server.commands()[1:] == [("abort", {"reason": f"error at line {line} (exit code 1)"})]


@pytest.mark.parametrize(
    ("body", "reason", "returncode"),
    [
        ("exit 3\n", "exited with code 3 before takler_complete", 3),
        ("kill -TERM $$\n", "killed by signal TERM", 143),
        ("f() { false; echo no; }\nf\n", "exited with code 1 before takler_complete", 1),
    ],
)
def test_job_that_stops_early_aborts(server, tmp_path, body, reason, returncode) -> None:
    result, _ = run_job(tmp_path, server.port, body)
    assert result.returncode == returncode
    assert server.commands()[1:] == [("abort", {"reason": reason})]


def test_zombie_job_does_not_abort(server, tmp_path) -> None:
    server.replies = [(403, {"ok": False, "error": {"code": "zombie", "message": "old try"}})]
    result, _ = run_job(tmp_path, server.port, "echo never\n")
    assert result.returncode == 1
    assert "never" not in result.stdout
    assert [c for c, _ in server.commands()] == ["init"]


def test_child_command_cost(server, capsys) -> None:
    """Prints the median wall time of one child command (not asserted)."""
    loop = (
        "for i in {{1..40}}; do s=$EPOCHREALTIME; "
        + "{cmd}; e=$EPOCHREALTIME; echo $(( ${{e/./}} - ${{s/./}} )); done"
    )
    env = job_env(server.port)
    timings = {}
    for name, cmd in [
        ("takler_event", "takler_event e1"),
        ("bin/ecflow_client --event", f"{ECFLOW_CLIENT} --event=e1"),
    ]:
        result = bash(loop.format(cmd=cmd), env)
        assert result.returncode == 0, result.stderr
        timings[name] = statistics.median(int(t) for t in result.stdout.split()) / 1000
    with capsys.disabled():
        print("\nchild command median wall time:", {k: f"{v:.2f} ms" for k, v in timings.items()})


def test_tls_goes_through_curl(tls_server) -> None:
    fake, cafile = tls_server
    env = job_env(fake.port, TAKLER_CAFILE=str(cafile), TEXT=LABEL_TEXT)
    result = bash('takler_label l "$TEXT"', env)
    assert (result.returncode, result.stderr) == (0, "")
    assert fake.commands() == [("label", {"name": "l", "text": LABEL_TEXT})]
    untrusted = bash(
        "takler_event e1", {**env, "TAKLER_CAFILE": "/dev/null", "TAKLER_TIMEOUT": "0"}
    )
    assert untrusted.returncode == 1
    assert "takler_child: event failed after 0 s: cannot reach" in untrusted.stderr
