"""The server's commands: what user and child requests do to the model.

Transport-free: the service decodes a request, checks the caller's role and
calls :meth:`Dispatcher.execute` or :meth:`Dispatcher.child`. Each command
applies whole or raises a :class:`TaklerError` having changed nothing, and
returns only once its changes are durable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import takler
from takler.core import ops
from takler.core.errors import (
    InvalidValueError,
    NodeNotFoundError,
    StateError,
    TaklerError,
    ZombieError,
)
from takler.core.node import Family, Flow, Node, Task
from takler.core.status import RUNNING, NodeStatus
from takler.protocol import ServiceUnavailable
from takler.server.scheduler import (
    hidden_statuses,
    note_hidden_statuses,
    note_latches,
    note_time_resets,
    unlatched_times,
)

if TYPE_CHECKING:
    from takler.server.server import TaklerServer

log = logging.getLogger("takler.server")
zombie_log = logging.getLogger("takler.zombie")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

_MUTATING = frozenset(
    {
        "begin", "requeue", "suspend", "resume", "run", "force", "kill", "free_dep", "alter",
        "delete", "load", "replace",
    }
)  # fmt: skip


def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, default: Any = ...) -> Any:
    if name not in args or args[name] is None:
        if default is ...:
            raise InvalidValueError(f"missing argument {name!r}")
        return default
    value = args[name]
    if kind is bool and not isinstance(value, bool):
        raise InvalidValueError(f"argument {name!r} must be true or false")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidValueError(f"argument {name!r} must be an integer")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidValueError(f"argument {name!r} must be a {names}")
    return value


class Dispatcher:
    """Runs commands against one server's model."""

    def __init__(self, server: TaklerServer) -> None:
        self.server = server
        self._handlers: dict[str, Handler] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("cmd_")
        }

    @property
    def commands(self) -> frozenset[str]:
        return frozenset(self._handlers)

    # ---------------------------------------------------------------- entry points

    async def execute(self, command: str, args: dict[str, Any], identity: Any = None) -> Any:
        """Run a user command.

        Raises:
            TaklerError: refused; nothing changed (code in ``.code``).
        """
        handler = self._handlers.get(command)
        if handler is None:
            err = TaklerError(f"unknown command {command!r}")
            err.code = "unknown_command"
            raise err
        if not isinstance(args, dict):
            raise InvalidValueError("args must be an object")
        if command in _MUTATING:
            await self.server.check_writable()
        self.server.bunch.now = self.server.now()
        try:
            result = await handler(args)
        finally:
            # Operations refuse before changing anything; commit whatever did change.
            await self.server.commit()
        return result

    async def child(self, body: dict[str, Any]) -> Any:
        """Apply a child command (from a job). See ``docs/protocol.md``.

        Raises:
            ZombieError: not from the task's current job (logged, never applied).
            TaklerError: malformed or unknown task.
        """
        server = self.server
        if server.state.value == "halted":
            raise ServiceUnavailable("the server is halted: retry later")
        if not isinstance(body, dict):
            raise InvalidValueError("a child command must be an object")
        path = _arg(body, "path")
        command = _arg(body, "command")
        password = body.get("password")
        tryno = body.get("tryno")
        args = body.get("args") or {}
        if not isinstance(args, dict):
            raise InvalidValueError("args must be an object")
        if command not in _CHILD:
            raise InvalidValueError(f"unknown child command {command!r}")
        handler = _CHILD[command]
        node = server.bunch.find_node(path)
        if not isinstance(node, Task):
            raise NodeNotFoundError(f"{path} is not a task")
        try:
            ops.check_child(node, password, tryno if isinstance(tryno, int) else None)
        except ZombieError as e:
            self._zombie(path, tryno, command, str(e))
            raise
        server.bunch.now = server.now()
        if command == "wait":
            return await self._child_wait(node, _arg(args, "expression"))
        assert handler is not None
        try:
            # The job retries on "unavailable" until the store can be written.
            await server.check_writable()
            if command == "init" and node.status is NodeStatus.submitted:
                self.record_history("start", {"path": path, "tryno": node.tryno, "rid": node.rid})
            hidden = hidden_statuses(node)
            handler(node, args)
            note_hidden_statuses(hidden)
            await server.commit()
        except TaklerError as e:
            if getattr(e, "code", None) == "read_only_store":
                raise ServiceUnavailable(f"{e}: retry later") from None
            raise
        return None

    def _zombie(self, path: str, tryno: Any, command: str, reason: str) -> None:
        key = (path, tryno if isinstance(tryno, int) else -1, command)
        entry = self.server.zombies.get(key)
        now = self.server.now().isoformat()
        if entry is None:
            entry = {"path": path, "tryno": key[1], "command": command, "reason": reason,
                     "time": now, "count": 0}  # fmt: skip
            self.server.zombies[key] = entry
            while len(self.server.zombies) > 1000:
                del self.server.zombies[next(iter(self.server.zombies))]
        entry["count"] += 1
        entry["time"] = now
        zombie_log.warning("zombie %s %s (try %s): %s", command, path, tryno, reason)
        if self.server.hub is not None:
            from takler.core.change import Change, ChangeKind

            self.server.hub.publish(
                [Change(path, ChangeKind.flag, "zombie", None, {"command": command, "reason": reason})],
                self.server.state.value,
            )

    async def _child_wait(self, task: Task, text: str) -> Any:
        from takler.core.attributes import ExprAttr
        from takler.core.expression import parse_expression
        from takler.core.ready import holds

        # Not indexed: its paths resolve from the task as it is evaluated.
        attr = ExprAttr(parse_expression(text))
        tryno = task.tryno
        while not holds(task, attr):
            await self.server.wait_changed()
            if task.tryno != tryno or task.status not in RUNNING:
                raise ZombieError(f"{task.node_path} was requeued while waiting")
        return {"holds": True}

    # ---------------------------------------------------------------- helpers

    def _node(self, args: dict[str, Any]) -> Node:
        return self.server.bunch.find_node(_arg(args, "path"))

    def _task(self, args: dict[str, Any]) -> Task:
        node = self._node(args)
        if not isinstance(node, Task):
            raise InvalidValueError(f"{node.node_path} is not a task")
        return node

    def snapshot(self, path: str | None = None, secrets: bool = False) -> dict[str, Any]:
        from takler.codec import dump_bunch, dump_node

        if path:
            return dump_node(self.server.bunch.find_node(path), secrets=secrets)
        data = dump_bunch(self.server.bunch, secrets=secrets)
        data["server"] = {"state": self.server.state.value}
        return data

    def record_history(self, event: str, data: dict[str, Any]) -> None:
        """Note a job's ``submit``, ``start``, ``end`` or ``submit_failed``
        (``data``: path, tryno, rid and columns); the next commit writes it."""
        fields = dict(data)
        path, tryno = fields.pop("path"), fields.pop("tryno")
        now = self.server.now()
        if event == "submit":
            self.server.note_history("add", path, tryno, submitted_at=now, **fields)
        elif event == "submit_failed":
            self.server.note_history("add", path, tryno, submitted_at=now, ended_at=now, **fields)
        elif event == "start":
            self.server.note_history("update", path, tryno, started_at=now, **fields)
        else:
            self.server.note_history("update", path, tryno, ended_at=now, **fields)

    # ---------------------------------------------------------------- read commands

    async def cmd_ping(self, args: dict[str, Any]) -> Any:
        bunch = self.server.bunch
        return {
            "version": takler.__version__,
            "server_state": self.server.state.value,
            "flows": len(bunch.flows),
            "tasks": bunch.task_count,
            "read_only": self.server.read_only_reason,
        }

    async def cmd_show(self, args: dict[str, Any]) -> Any:
        from takler.codec import dump_node

        path = _arg(args, "path", str, None)
        with_vars = _arg(args, "vars", bool, False)
        if not path or path == "/":
            data = self.snapshot(None)
            nodes: list[Node] = [self.server.bunch.flows[f["name"]] for f in data["flows"]]
            dumps = data["flows"]
        else:
            node = self.server.bunch.find_node(path)
            data = dump_node(node)
            nodes, dumps = [node], [data]
        if with_vars:
            for node, dump in zip(nodes, dumps, strict=True):
                _add_vars(node, dump)
        return data

    async def cmd_why(self, args: dict[str, Any]) -> Any:
        from takler.core.why import why

        node = self._node(args)
        unlatched = unlatched_times(node)
        reasons = why(node, self.server.now(), self.server.state.value)
        note_latches(self.server.bunch, unlatched)
        if self.server.read_only_reason:
            reasons.insert(0, f"the store cannot be written: {self.server.read_only_reason}")
        return {"path": node.node_path, "state": node.state.value, "reasons": reasons}

    async def cmd_history(self, args: dict[str, Any]) -> Any:
        path = _arg(args, "path", str, None)
        if path:
            self.server.bunch.find_node(path)
        if self.server.store is None:
            return []
        return await self.server.store_call(self.server.store.history, path)

    async def cmd_zombies(self, args: dict[str, Any]) -> Any:
        return list(self.server.zombies.values())

    async def cmd_checkpoint(self, args: dict[str, Any]) -> Any:
        from takler.codec import dump_bunch

        data = dump_bunch(self.server.bunch, secrets=True)
        data["server"] = {"state": self.server.state.value}
        return data

    # ---------------------------------------------------------------- node commands

    async def cmd_begin(self, args: dict[str, Any]) -> Any:
        node = self._node(args)
        if not isinstance(node, Flow):
            raise InvalidValueError(f"{node.node_path} is not a flow: begin takes a flow")
        hidden = hidden_statuses(node)
        ops.begin(node, force=_arg(args, "force", bool, False))
        note_hidden_statuses(hidden)
        return None

    async def cmd_requeue(self, args: dict[str, Any]) -> Any:
        node = self._node(args)
        hidden = hidden_statuses(node)
        ops.requeue(
            node,
            reset_repeats=_arg(args, "reset_repeats", bool, False),
            force=_arg(args, "force", bool, False),
        )
        note_hidden_statuses(hidden)
        note_time_resets(node)
        return None

    async def cmd_suspend(self, args: dict[str, Any]) -> Any:
        ops.suspend(self._node(args))
        return None

    async def cmd_resume(self, args: dict[str, Any]) -> Any:
        ops.resume(self._node(args))
        return None

    async def cmd_run(self, args: dict[str, Any]) -> Any:
        from takler.server.jobs import new_password

        task = self._task(args)
        force = _arg(args, "force", bool, False)
        ops.check_runnable(task, force=force)
        if self.server.state.value != "running":
            raise StateError(f"the server is {self.server.state.value}: 'restart' it first")
        ops.start_submission(task, new_password())
        await self.server.commit()
        self.server.submit_job(task)
        return {"tryno": task.tryno}

    async def cmd_force(self, args: dict[str, Any]) -> Any:
        path = _arg(args, "path")
        state = _arg(args, "state")
        if state in ("set", "clear", "event-set", "event-clear"):
            node_path, sep, event = path.rpartition(":")
            name = _arg(args, "event", str, None) or (event if sep else None)
            if not name:
                raise InvalidValueError("force set/clear needs PATH:EVENT")
            node = self.server.bunch.find_node(node_path if sep else path)
            node.set_event(name, state.endswith("set"))
            return None
        node = self.server.bunch.find_node(path)
        hidden = hidden_statuses(node)
        ops.force(node, state, recursive=_arg(args, "recursive", bool, False))
        note_hidden_statuses(hidden)
        if state == "queued":
            note_time_resets(node)
        return None

    async def cmd_kill(self, args: dict[str, Any]) -> Any:
        node = self._node(args)
        assert self.server.jobs is not None
        killed = []
        for task in node.tasks():
            if task.status in RUNNING:
                if await self.server.jobs.kill(task):
                    killed.append(task.node_path)
        if not killed:
            raise StateError(f"no running job under {node.node_path}")
        return {"killed": killed}

    async def cmd_free_dep(self, args: dict[str, Any]) -> Any:
        node = self._node(args)
        every = _arg(args, "all", bool, False)
        ops.free_dependencies(
            node,
            trigger=every or _arg(args, "trigger", bool, True),
            time=every or _arg(args, "time", bool, False),
            complete=every,
        )
        return None

    async def cmd_alter(self, args: dict[str, Any]) -> Any:
        from takler.server.alter import alter

        alter(self.server.bunch, self._node(args), args)
        return None

    async def cmd_delete(self, args: dict[str, Any]) -> Any:
        ops.delete(self._node(args), force=_arg(args, "force", bool, False))
        if self.server.store is not None:
            node_path = _arg(args, "path")
            if node_path.strip("/").count("/") == 0:
                await self.server.store_call(self.server.store.delete_flow, node_path.strip("/"))
        return None

    async def cmd_load(self, args: dict[str, Any]) -> Any:
        from takler.codec import load_flow

        flows_data = _arg(args, "flows", list)
        replace = _arg(args, "replace", bool, False)
        # Each flow's nodes by path, as built: the check and add_flow take them
        # rather than walk a big flow twice more.
        built = []
        for data in flows_data:
            paths: dict[str, Node] = {}
            built.append((load_flow(data, paths=paths), paths))
        bunch = self.server.bunch
        names = [f.name for f, _ in built]
        if len(set(names)) != len(names):
            raise InvalidValueError("load: two flows with the same name")
        for flow, paths in built:
            if flow.name in bunch.flows and not replace:
                from takler.core.errors import DuplicateNameError

                raise DuplicateNameError(f"flow {flow.name} already exists (use replace)")
            problems = flow.check(paths)
            if problems:
                raise InvalidValueError(f"flow {flow.name}: {problems[0]}")
        for flow, paths in built:
            old = bunch.flows.get(flow.name)
            if old is not None:
                ops.delete(old, force=False)
            bunch.add_flow(flow, paths=paths)
        # No save here: execute()'s commit writes each added flow whole (its
        # node_added changes are structural), after deleting a replaced one.
        return {"loaded": names}

    async def cmd_replace(self, args: dict[str, Any]) -> Any:
        path = _arg(args, "path")
        data = _arg(args, "flow", dict)
        name = path.strip("/")
        if not name or "/" in name:
            raise InvalidValueError(f"replace takes the path of a flow, not {path!r}")
        if data.get("name") != name:
            # Otherwise a request naming one flow could replace another.
            raise InvalidValueError(f"replace {path}: the flow given is not named {name!r}")
        return await self.cmd_load({"flows": [data], "replace": True})

    # ---------------------------------------------------------------- server commands

    async def _set_state(self, state: str) -> Any:
        from takler.server.server import ServerState

        # The change is saved by execute()'s commit, before the reply.
        self.server.set_state(ServerState(state))
        return {"server_state": state}

    async def cmd_shutdown(self, args: dict[str, Any]) -> Any:
        return await self._set_state("shutdown")

    async def cmd_halt(self, args: dict[str, Any]) -> Any:
        return await self._set_state("halted")

    async def cmd_restart(self, args: dict[str, Any]) -> Any:
        return await self._set_state("running")

    async def cmd_stop(self, args: dict[str, Any]) -> Any:
        self.server.stop()
        return {"stopping": True}

    async def cmd_token_add(self, args: dict[str, Any]) -> Any:
        name = _arg(args, "name")
        role = _arg(args, "role", str, "operator")
        token = self.server.auth.add(name, role)
        return {"name": name, "role": role, "token": token}

    async def cmd_token_list(self, args: dict[str, Any]) -> Any:
        return self.server.auth.list()

    async def cmd_token_revoke(self, args: dict[str, Any]) -> Any:
        self.server.auth.revoke(_arg(args, "name"))
        return None


def _add_vars(node: Node, dump: dict[str, Any]) -> None:
    dump["variables"] = {
        name: {"value": value, "origin": origin, "defined_at": where}
        for name, (value, origin, where) in sorted(node.all_parameters().items())
        if name != "TAKLER_PASSWORD"
    }
    if isinstance(node, Family):
        for child, child_dump in zip(node.children, dump.get("children", []), strict=False):
            _add_vars(child, child_dump)


def _c_init(task: Task, args: dict[str, Any]) -> None:
    ops.init(task)


def _c_event(task: Task, args: dict[str, Any]) -> None:
    value = args.get("value", True)
    if isinstance(value, str):
        value = value != "clear"
    task.set_event(_arg(args, "name"), bool(value))


def _c_meter(task: Task, args: dict[str, Any]) -> None:
    value = args.get("value")
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    task.set_meter(_arg(args, "name"), value)  # type: ignore[arg-type]


def _c_label(task: Task, args: dict[str, Any]) -> None:
    task.set_label(_arg(args, "name"), str(args.get("text", "")))


def _c_complete(task: Task, args: dict[str, Any]) -> None:
    ops.complete(task)


def _c_abort(task: Task, args: dict[str, Any]) -> None:
    reason = args.get("reason") or "aborted by the job"
    ops.abort(task, str(reason)[:1000])


_CHILD: dict[str, Callable[[Task, dict[str, Any]], None] | None] = {
    "init": _c_init,
    "event": _c_event,
    "meter": _c_meter,
    "label": _c_label,
    "complete": _c_complete,
    "abort": _c_abort,
    "wait": None,
}
