"""Fuzzing the real dispatcher through the service, over memory streams.

Random and mutated commands, for an operator, a read-only and an anonymous
caller, against a started server holding a populated flow with a running
task: nothing crashes, every reply is well formed, refused input leaves the
model as it was, and only the operator changes anything.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from takler.codec import dump_bunch, dump_node
from takler.core import Flow, Task, ops
from takler.protocol import COMMAND_ROLES, ERROR_CODES
from takler.server import TaklerServer
from takler.server.auth import Auth
from tests.server.fake_dispatcher import ws_session

NOW = dt.datetime(2024, 1, 1, 12)
PASSWORD = "job-secret"
OPERATOR, READER = "op-token", "read-token"
STATES = ["unknown", "queued", "submitted", "active", "complete", "aborted", "set", "clear"]
PATHS = ["/f", "/f/fam", "/f/fam/t1", "/f/fam/t2", "/f/g", "/f/g/t3", "/f/fam/t1:ev", "/nope",
         "", "/", "f/fam", "/f/../f", "/f/fam/t1/x", "/" + "n" * 5000]  # fmt: skip
NAMES = ["X", "ev", "m", "lab", "L", "I", "new", "", "bad name", "N" * 300]
EXPRESSION_WORDS = ["t1", "t2", "/f/fam/t1", "../fam/t1", "t1:ev", "t1:m", "==", "!=", ">=",
                    "<", "and", "or", "not", "(", ")", "complete", "aborted", "1", "5", ":",
                    "+", "I", "ev", '"', "/f/g:I", "x" * 300]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
expressions = st.lists(st.sampled_from(EXPRESSION_WORDS), max_size=7).map(" ".join)


def populated_flow() -> Flow:
    flow = Flow("f")
    flow.add_limit("L", 2)
    flow.add_parameter("X", "1")
    fam = flow.add_family("fam")
    fam.add_in_limit("L")
    t1 = fam.add_task("t1")
    t1.add_event("ev")
    t1.add_meter("m", 0, 10)
    t1.add_label("lab", "")
    t2 = fam.add_task("t2")
    t2.add_trigger("t1 == complete and t1:ev")
    t2.add_complete("t1:m >= 5")
    g = flow.add_family("g")
    g.add_repeat("integer I 1 3")
    g.add_time("10:00")
    g.add_task("t3").add_trigger("/f/fam/t1:m > 2")
    return flow


BASE_FLOW = dump_node(populated_flow(), state=False)


@st.composite
def mutated_flow(draw: st.DrawFn) -> Any:
    """A flow dump with a few keys or items dropped, replaced or added, anywhere."""
    data = copy.deepcopy(BASE_FLOW)
    if draw(st.booleans()):
        data["name"] = "f2"
    for _ in range(draw(st.integers(0, 4))):
        target: Any = data
        for _ in range(draw(st.integers(0, 4))):
            inner = [v for v in (target.values() if isinstance(target, dict) else target)
                     if isinstance(v, dict | list) and v]  # fmt: skip
            if not inner:
                break
            target = draw(st.sampled_from(inner))
        action = draw(st.sampled_from(["drop", "set", "add"]))
        if isinstance(target, dict):
            keys = sorted(target)
            if action == "drop" and keys:
                del target[draw(st.sampled_from(keys))]
            elif action == "set" and keys:
                target[draw(st.sampled_from(keys))] = draw(json_values | expressions)
            else:
                key = draw(st.sampled_from(["__reduce__", "py/object", "password", "status",
                                            "children", "kind"]) | st.text(max_size=6))  # fmt: skip
                target[key] = draw(json_values)
        elif action == "drop" and target:
            target.pop(draw(st.integers(0, len(target) - 1)))
        else:
            target.append(draw(json_values))
    return data


def _args(draw: st.DrawFn, command: str) -> dict[str, Any]:
    path = st.sampled_from(PATHS)
    if command == "child":
        return {"path": draw(path | st.just("/f/fam/t1")),
                "password": draw(st.sampled_from([PASSWORD, "wrong"])),
                "tryno": draw(st.sampled_from([1, 2, 0])),
                "command": draw(st.sampled_from(["init", "event", "meter", "label", "complete",
                                                 "abort", "jump"])),
                "args": {"name": draw(st.sampled_from(NAMES)),
                         "value": draw(json_values), "text": draw(json_values)}}  # fmt: skip
    if command == "alter":
        kind = draw(st.sampled_from(["variable", "meter", "event", "label", "limit", "trigger",
                                     "complete", "repeat"]))  # fmt: skip
        value = draw(expressions) if kind in ("trigger", "complete") else draw(json_values)
        return {"path": draw(path), "action": draw(st.sampled_from(["add", "change", "delete"])),
                "kind": kind, "name": draw(st.sampled_from(NAMES)), "value": value}  # fmt: skip
    if command == "force":
        return {"path": draw(path), "state": draw(st.sampled_from(STATES)),
                "recursive": draw(st.booleans())}  # fmt: skip
    if command == "load":
        return {"flows": draw(st.lists(mutated_flow(), max_size=2)), "replace": draw(st.booleans())}
    if command == "replace":
        return {"path": draw(path), "flow": draw(mutated_flow())}
    if command in ("token_add", "token_revoke"):
        return {"name": draw(st.sampled_from(["ci", "viewer", ""])),
                **({"role": draw(st.sampled_from(["read", "operator", "root"]))}
                   if command == "token_add" else {})}  # fmt: skip
    if command == "auth":
        return {"token": "the session's own"}  # set by prepare()
    if command == "unsubscribe":
        return {"subscription": draw(st.integers(-1, 3))}
    if command in ("ping", "zombies", "checkpoint", "shutdown", "halt", "restart", "stop",
                   "token_list"):  # fmt: skip
        return {}
    return {"path": draw(path)}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible request, then 0-2 random mutations of its arguments or envelope."""
    command = draw(st.sampled_from(sorted(COMMAND_ROLES)))
    message: dict[str, Any] = {"v": 1, "id": 1, "command": command, "args": _args(draw, command)}
    for _ in range(draw(st.integers(0, 2))):
        args = message.get("args")
        on_args = draw(st.sampled_from([True, True, True, False]))
        target = args if isinstance(args, dict) and on_args else message
        action = draw(st.sampled_from(["drop", "set", "add", "rename"]))
        if action == "drop" and target:
            del target[draw(st.sampled_from(sorted(target)))]
        elif action == "set" and target:
            target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
        elif action == "rename":
            message["command"] = draw(st.sampled_from(sorted(COMMAND_ROLES)) | st.text(max_size=10))
        else:
            target[draw(st.text(max_size=8))] = draw(json_values)
    return message


garbage = st.one_of(json_values.map(json.dumps), st.text(max_size=100), st.binary(max_size=60))
# Mostly requests that get past the envelope, so the dispatcher sees them.
messages = st.integers(0, 9).flatmap(lambda k: requests() if k < 7 else garbage)


def fingerprint(server: TaklerServer) -> Any:
    data = dump_bunch(server.bunch, secrets=True)
    data.pop("now", None)
    return data, server.state.value, server.auth.list()


def well_formed(reply: Any) -> None:
    assert isinstance(reply, dict) and reply["v"] == 1, reply
    if "type" in reply:
        assert reply["type"] in ("snapshot", "delta", "closed")
        return
    assert reply["ok"] in (True, False)
    if not reply["ok"]:
        error = reply["error"]
        assert error["code"] in ERROR_CODES and error["code"] != "server_error", reply
        assert error["message"] and "\n" not in error["message"], reply


def expected_id(message: Any) -> Any:
    rid = message.get("id") if isinstance(message, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, int | str) or len(str(rid)) > 64:
        return None
    return rid


async def exchange(ws: Any, message: Any, text: str | bytes) -> dict[str, Any]:
    """Send one message; its reply (stream messages and late wait replies skipped)."""
    await ws.send_message(text)
    rid = expected_id(message)
    with trio.fail_after(10):
        while True:
            reply = json.loads(await ws.get_message())
            well_formed(reply)
            if "type" not in reply and reply["id"] in (rid, None):
                return reply  # type: ignore[no-any-return]


def prepare(message: Any, n: int, token: str | None) -> tuple[Any, str | bytes]:
    if isinstance(message, bytes | str):
        return None, message
    if message.get("id") == 1:
        message["id"] = n  # tell replies apart
    args = message.get("args")
    if message.get("command") == "auth" and isinstance(args, dict) and "token" in args:
        args["token"] = token or "nope"  # another token would change who the session is
    if message.get("command") == "child" and isinstance(args, dict):
        if args.get("command") == "wait":
            args["command"] = "init"  # with the right password it may be held forever
    return message, json.dumps(message)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def _fuzz(home: Path, batch: list[Any]) -> int:
    server = TaklerServer(home=home, console=False, store=False, listeners=[], runners={},
                          wall_clock=NOW)  # fmt: skip
    flow = populated_flow()
    server.add_flows([flow], begin=True)
    await server.start()
    errors = _Errors()
    logging.getLogger("takler").addHandler(errors)
    sent = 0
    try:
        t1 = flow.find_node("fam/t1")
        assert isinstance(t1, Task)
        ops.start_submission(t1, PASSWORD)
        ops.init(t1)
        await server.commit()
        server.auth = server.service.auth = Auth.memory(
            {OPERATOR: ("op", "operator"), READER: ("viewer", "read")}
        )
        for token in (READER, None, OPERATOR):
            async with ws_session(server.service, token) as ws:
                for n, raw in enumerate(batch):
                    message, text = prepare(copy.deepcopy(raw), n + 2, token)
                    before = fingerprint(server)
                    reply = await exchange(ws, message, text)
                    sent += 1
                    command = message.get("command") if isinstance(message, dict) else None
                    if not reply["ok"]:
                        assert fingerprint(server) == before, (message, reply)
                    elif token != OPERATOR:
                        assert COMMAND_ROLES[str(command)] != "operator", (message, reply)
                        if command != "child":  # a job's own password may change its task
                            assert fingerprint(server) == before, (message, reply)
                    if isinstance(raw, bytes):
                        assert reply["error"]["code"] == "bad_request"
                ping = await exchange(ws, {"id": 0}, '{"v": 1, "id": 0, "command": "ping"}')
                assert ping["ok"] is True
        await trio.testing.wait_all_tasks_blocked()
        assert server.service.connections == 0
    finally:
        logging.getLogger("takler").removeHandler(errors)
        await server.aclose()
    assert errors.messages == []
    return sent


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(messages, min_size=30, max_size=60))
def test_the_real_dispatcher_survives_random_and_mutated_commands(batch: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as home:
        sent = trio.run(_fuzz, Path(home), batch)
    assert sent == 3 * len(batch)
