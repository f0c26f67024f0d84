"""The wire protocol shared by the server and its clients (version 1).

Users speak JSON text messages over WebSocket: a :class:`Request` gets one
:class:`Response` with the same ``id``; a subscription streams a
:class:`Snapshot` and then :class:`Delta` messages until :class:`Closed`. Jobs
send a :class:`ChildRequest` as the body of ``POST /child``. This module does
no I/O: it turns text into validated values and values into text.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.errors import ClassValidationError

from takler.core.bunch import gc_paused
from takler.core.errors import StateError, TaklerError

PROTOCOL_VERSION = 1
_MISSING: Any = object()
_BIG_MESSAGE = 1 << 18
MAX_ID_LENGTH = 64
MAX_COMMAND_LENGTH = 64
MAX_NAME_LENGTH = 4096

# The role a command needs: "public" (no token), "read" (a read or operator
# token) or "operator".
COMMAND_ROLES: dict[str, str] = {
    **dict.fromkeys(("ping", "auth", "child"), "public"),
    **dict.fromkeys(("show", "why", "history", "zombies", "subscribe", "unsubscribe"), "read"),
    **dict.fromkeys(
        ("checkpoint", "begin", "requeue", "suspend", "resume", "run", "kill", "force",
         "free_dep", "alter", "delete", "load", "replace", "shutdown", "halt", "restart",
         "stop", "token_add", "token_list", "token_revoke"),
        "operator",
    ),
}  # fmt: skip

_ANY = object()  # an argument that may hold any JSON value
_PATH = {"path": (str, True)}
# Per command: argument name -> (expected type, required). Optional arguments
# also accept null, meaning "not given".
COMMAND_ARGS: dict[str, dict[str, tuple[Any, bool]]] = {
    "ping": {},
    "auth": {"token": (str, True)},
    "child": {
        "path": (str, True),
        "password": (str, True),
        "tryno": (int, True),
        "command": (str, True),
        "args": (dict, False),
    },
    "show": {"path": (str, False), "vars": (bool, False), "secrets": (bool, False)},
    "why": _PATH,
    "history": {"path": (str, False)},
    "zombies": {},
    "subscribe": {"path": (str, False)},
    "unsubscribe": {"subscription": (int, True)},
    "checkpoint": {},
    "begin": {**_PATH, "force": (bool, False)},
    "requeue": {**_PATH, "reset_repeats": (bool, False), "force": (bool, False)},
    "suspend": _PATH,
    "resume": _PATH,
    "run": {**_PATH, "force": (bool, False)},
    "kill": _PATH,
    "force": {**_PATH, "state": (str, True), "recursive": (bool, False), "event": (str, False)},
    "free_dep": {**_PATH, "trigger": (bool, False), "time": (bool, False), "all": (bool, False)},
    "alter": {
        **_PATH,
        "action": (str, False),
        "kind": (str, True),
        "name": (str, False),
        "value": (_ANY, False),
    },
    "delete": {**_PATH, "force": (bool, False)},
    "load": {"flows": (list, True), "replace": (bool, False)},
    "replace": {**_PATH, "flow": (dict, True)},
    "shutdown": {},
    "halt": {},
    "restart": {},
    "stop": {},
    "token_add": {"name": (str, True), "role": (str, False)},
    "token_list": {},
    "token_revoke": {"name": (str, True)},
}

# Every code an error reply may carry.
ERROR_CODES = frozenset(
    "bad_request unknown_command bad_args unauthorized forbidden not_found duplicate bad_name"
    " bad_state bad_expression bad_value bad_time bad_repeat bad_definition unsupported bad_data"
    " zombie too_large too_many unavailable server_error read_only_store".split()
)


class ProtocolError(TaklerError, ValueError):
    """A message is not valid protocol.

    Attributes:
        request_id: the id of the offending request when it could be read,
            so the error reply can carry it; else ``None``.
    """

    code = "bad_request"

    def __init__(self, message: str, request_id: int | str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class TooLargeError(ProtocolError):
    """A message, or a name or path inside it, exceeds its size limit."""

    code = "too_large"


class BadArgumentsError(ProtocolError):
    """A command's arguments are missing, unexpected or of the wrong type."""

    code = "bad_args"


class UnknownCommandError(ProtocolError):
    """A request names no known command."""

    code = "unknown_command"


class TooManyError(TaklerError, RuntimeError):
    """A per-connection or per-server limit (subscriptions...) is reached."""

    code = "too_many"


class ServiceUnavailable(StateError):
    """The server cannot serve the request now (halted, not ready): retry later."""

    code = "unavailable"


@attrs.frozen
class ErrorInfo:
    code: str
    message: str


@attrs.frozen
class Request:
    """One user command: ``{"v": 1, "id", "command", "args", "token"?}``."""

    id: int | str
    command: str
    args: dict[str, Any] = attrs.Factory(dict)
    token: str | None = None
    v: int = PROTOCOL_VERSION


@attrs.frozen
class Response:
    """The one reply to a request: a result, or an error."""

    id: int | str | None
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    v: int = PROTOCOL_VERSION

    @classmethod
    def success(cls, request_id: int | str | None, result: Any) -> Response:
        return cls(request_id, True, result)

    @classmethod
    def failure(cls, request_id: int | str | None, code: str, message: str) -> Response:
        return cls(request_id, False, error=ErrorInfo(code, message))


@attrs.frozen
class Snapshot:
    """A subscription's first message: the subscribed tree as data."""

    subscription: int
    seq: int
    data: Any
    v: int = PROTOCOL_VERSION


@attrs.frozen
class Delta:
    """Changes applied since the previous message of a subscription."""

    subscription: int
    seq: int
    changes: list[dict[str, Any]]
    server: dict[str, Any]
    v: int = PROTOCOL_VERSION


@attrs.frozen
class Closed:
    """The server ended a subscription (``reason``: "too slow", "server shutdown"...)."""

    subscription: int
    reason: str
    v: int = PROTOCOL_VERSION


@attrs.frozen
class ChildRequest:
    """A job's child command: the body of ``POST /child``."""

    path: str
    password: str
    tryno: int
    command: str
    args: dict[str, Any] = attrs.Factory(dict)
    v: int = PROTOCOL_VERSION


StreamMessage = Snapshot | Delta | Closed
Message = Request | Response | Snapshot | Delta | Closed | ChildRequest


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), "array" if isinstance(value, list) else "object"
    )


def _strict(kind: type, what: str) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"expected {what}, got {_type_name(value)}")
        return value

    return hook


def _structure_id(value: Any, _type: Any) -> int | str:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"expected an integer or a string, got {_type_name(value)}")


def _structure_any(value: Any, _type: Any) -> Any:
    return value


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(int, _strict(int, "an integer"))
_converter.register_structure_hook(str, _strict(str, "a string"))
_converter.register_structure_hook(bool, _strict(bool, "a boolean"))
_converter.register_structure_hook_func(lambda t: t == (int | str), _structure_id)
_converter.register_structure_hook_func(
    lambda t: t == (int | str | None),
    lambda v, t: None if v is None else _structure_id(v, t),
)
_converter.register_structure_hook_func(lambda t: t == dict[str, Any], _strict(dict, "an object"))
_converter.register_structure_hook_func(
    lambda t: t == list[dict[str, Any]], _strict(list, "an array")
)
_converter.register_structure_hook_func(lambda t: t is Any, _structure_any)
# Server-to-client messages tolerate fields a newer server may add.
for _cls in (Response, Snapshot, Delta, Closed, ErrorInfo):
    _converter.register_structure_hook(
        _cls,
        cattrs.gen.make_dict_structure_fn(_cls, _converter, _cattrs_forbid_extra_keys=False),
    )


def _unstructure_response(msg: Response) -> dict[str, Any]:
    out: dict[str, Any] = {"v": msg.v, "id": msg.id, "ok": msg.ok}
    if msg.ok:
        out["result"] = msg.result
    else:
        error = msg.error or ErrorInfo("server_error", "unknown error")
        out["error"] = {"code": error.code, "message": error.message}
    return out


def _unstructure_request(msg: Request) -> dict[str, Any]:
    out = {"v": msg.v, "id": msg.id, "command": msg.command, "args": msg.args}
    if msg.token is not None:
        out["token"] = msg.token
    return out


_converter.register_unstructure_hook(Response, _unstructure_response)
_converter.register_unstructure_hook(Request, _unstructure_request)
for _cls, _kind in ((Snapshot, "snapshot"), (Delta, "delta"), (Closed, "closed")):
    _converter.register_unstructure_hook(
        _cls, lambda m, kind=_kind: {"type": kind, **attrs.asdict(m, recurse=False)}
    )
_converter.register_unstructure_hook(ChildRequest, lambda m: attrs.asdict(m, recurse=False))


def _json_default(value: Any) -> Any:
    """Values the model hands out that JSON lacks: enums, times, sets, attrs values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def _loads(text: str | bytes, max_size: int) -> Any:
    if len(text) > max_size:
        raise TooLargeError(f"message of {len(text)} bytes exceeds the limit of {max_size}")
    if isinstance(text, bytes | bytearray):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"message is not UTF-8: {exc.reason}") from None
    try:
        # Strict JSON: NaN, Infinity and numbers beyond a double are refused.
        if len(text) < _BIG_MESSAGE:
            return orjson.loads(text)
        # A snapshot builds many objects and no garbage: spare the cyclic GC's passes.
        with gc_paused():
            return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProtocolError(f"malformed JSON: {first[:200]}") from None


def _salvage_id(obj: Any) -> int | str | None:
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        return None
    if isinstance(rid, str) and len(rid) > MAX_ID_LENGTH:
        return None
    return rid


def _validation_message(exc: ClassValidationError) -> str:
    parts = []
    for line in cattrs.transform_error(exc, format_exception=_format_exception):
        text, _, where = line.rpartition(" @ ")
        field = where.removeprefix("$").removeprefix(".")
        parts.append(f"{field}: {text}" if field else text or line)
    return "; ".join(parts)[:300]


def _format_exception(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, TypeError | ValueError) and str(exc).startswith("expected"):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unexpected field(s) {', '.join(sorted(exc.extra_fields))}"
    return str(exc) or type(exc).__name__


def _structure(obj: Any, cls: type[Any], what: str) -> Any:
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, not {_type_name(obj)}")
    try:
        return _converter.structure(obj, cls)
    except ClassValidationError as exc:
        raise ProtocolError(f"bad {what}: {_validation_message(exc)}", _salvage_id(obj)) from None


_REQUEST_KEYS = frozenset(("v", "id", "command", "args", "token"))


def _plain_request(obj: Any) -> Request | None:
    """The request, when ``obj`` is one with every field of the right type;
    else ``None`` (then cattrs checks it and says what is wrong)."""
    if type(obj) is not dict or not obj.keys() <= _REQUEST_KEYS:
        return None
    rid, command, args = obj.get("id"), obj.get("command"), obj.get("args", _MISSING)
    token, v = obj.get("token"), obj.get("v", PROTOCOL_VERSION)
    if (
        (type(rid) is int or type(rid) is str)
        and type(command) is str
        and (args is _MISSING or type(args) is dict)
        and (token is None or type(token) is str)
        and type(v) is int
    ):
        return Request(rid, command, {} if args is _MISSING else args, token, v)
    return None


def _plain_success(obj: Any) -> Response | None:
    """A successful response with fields of the right type, built directly."""
    if type(obj) is not dict or obj.get("ok") is not True or "type" in obj:
        return None
    rid, v = obj.get("id"), obj.get("v", PROTOCOL_VERSION)
    if (rid is None or type(rid) is int or type(rid) is str) and type(v) is int:
        if obj.get("error") is None:
            return Response(rid, True, obj.get("result"), None, v)
    return None


def decode_request(text: str | bytes, max_size: int) -> Request:
    """Parse and validate one WebSocket request message.

    Only the envelope is checked here; :func:`check_args` checks arguments.

    Raises:
        ProtocolError: (``bad_request``) not JSON, not an object, wrong
            fields or types, unsupported version; ``too_large`` when the
            message exceeds ``max_size`` or an id or command is too long.
    """
    obj = _loads(text, max_size)
    request = _plain_request(obj) or _structure(obj, Request, "request")
    rid = request.id
    if isinstance(rid, str) and len(rid) > MAX_ID_LENGTH:
        raise TooLargeError(f"request id longer than {MAX_ID_LENGTH} characters")
    if request.v != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {request.v} (this server speaks {PROTOCOL_VERSION})",
            rid,
        )
    if len(request.command) > MAX_COMMAND_LENGTH:
        raise TooLargeError(f"command name longer than {MAX_COMMAND_LENGTH} characters", rid)
    if request.token is not None and len(request.token) > MAX_NAME_LENGTH:
        raise TooLargeError(f"token longer than {MAX_NAME_LENGTH} characters", rid)
    return request


def check_args(command: str, args: Mapping[str, Any], request_id: int | str | None = None) -> None:
    """Check ``args`` against the command's argument types.

    Raises:
        UnknownCommandError: no such command.
        BadArgumentsError: an argument is missing, unexpected or mistyped.
        TooLargeError: a string argument (other than ``value``) is longer than
            4096 characters.
    """
    spec = COMMAND_ARGS.get(command)
    if spec is None:
        shown = command if command.isprintable() else repr(command)
        raise UnknownCommandError(f"unknown command {shown[:MAX_COMMAND_LENGTH]}", request_id)
    extra = sorted(set(args) - set(spec))
    if extra:
        names = ", ".join(repr(name[:40]) for name in extra[:5])
        raise BadArgumentsError(f"{command}: unexpected argument(s) {names}", request_id)
    for name, (kind, required) in spec.items():
        value = args.get(name)
        if value is None:
            if required:
                raise BadArgumentsError(f"{command}: argument {name!r} is required", request_id)
            continue
        if kind is not _ANY and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            expected = {str: "a string", int: "an integer", bool: "a boolean", list: "an array",
                        dict: "an object"}[kind]  # fmt: skip
            raise BadArgumentsError(
                f"{command}: argument {name!r} must be {expected}, not {_type_name(value)}",
                request_id,
            )
        if isinstance(value, str) and name != "value" and len(value) > MAX_NAME_LENGTH:
            raise TooLargeError(
                f"{command}: argument {name!r} is longer than {MAX_NAME_LENGTH} characters",
                request_id,
            )


def decode_child(body: bytes | str, max_size: int = 1 << 20) -> ChildRequest:
    """Parse and validate a ``POST /child`` body.

    Raises:
        ProtocolError: not JSON, not an object, wrong fields or types
            (``bad_request``); ``too_large`` for an oversized body or path.
    """
    return child_request(_loads(body, max_size))


def child_request(obj: Any) -> ChildRequest:
    """Validate an already parsed child command (HTTP body or ``child`` args)."""
    request: ChildRequest = _structure(obj, ChildRequest, "child command")
    if request.v != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {request.v}")
    for name in ("path", "password", "command"):
        if len(getattr(request, name)) > MAX_NAME_LENGTH:
            raise TooLargeError(f"child {name} longer than {MAX_NAME_LENGTH} characters")
    return request


_STREAM_TYPES: dict[str, type[Any]] = {"snapshot": Snapshot, "delta": Delta, "closed": Closed}


def decode_message(text: str | bytes, max_size: int = 1 << 30) -> Response | StreamMessage:
    """Parse a server-to-client message (a response or a stream message).

    Raises:
        ProtocolError: the text is not a valid server message.
    """
    obj = _loads(text, max_size)
    response = _plain_success(obj)
    if response is not None:
        return response
    kind = obj.get("type") if isinstance(obj, dict) else None
    cls: type[Any] = Response
    if kind is not None:
        cls = _STREAM_TYPES.get(kind) if isinstance(kind, str) else None  # type: ignore[assignment]
        if cls is None:
            raise ProtocolError(f"unknown message type {kind!r}"[:100])
    return _structure(obj, cls, "server message")  # type: ignore[no-any-return]


def unstructure(msg: Message) -> dict[str, Any]:
    """The wire dict of a message."""
    return _converter.unstructure(msg)  # type: ignore[no-any-return]


def encode(msg: Message | Mapping[str, Any]) -> str:
    """Compact JSON text for a message (or an already built wire dict).

    Raises:
        TypeError: a value has no JSON form (an integer beyond 64 bits, an object...).

    Floats are written as they are: the model refuses NaN and infinities on
    entry, and the wire refuses them on the way in.
    """
    data = msg if isinstance(msg, Mapping) else _converter.unstructure(msg)
    return orjson.dumps(data, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
