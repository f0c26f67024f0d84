"""The user commands: one request each to the server, its answer printed."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from takler_cli.complete import complete_path
from takler_cli.connect import Conn, client_command
from takler_cli.output import EXIT_USAGE, CliExit, print_json, print_table

PathArg = Annotated[
    str, typer.Argument(help="Node path, e.g. /flow/family/task.", autocompletion=complete_path)
]
PathsArg = Annotated[list[str], typer.Argument(help="Node paths.", autocompletion=complete_path)]
OptPathArg = Annotated[
    str | None,
    typer.Argument(help="Node path (default: everything).", autocompletion=complete_path),
]


class ForceState(enum.StrEnum):
    unknown = "unknown"
    queued = "queued"
    submitted = "submitted"
    active = "active"
    complete = "complete"
    aborted = "aborted"
    event_set = "event-set"
    event_clear = "event-clear"


class AlterAction(enum.StrEnum):
    add = "add"
    change = "change"
    delete = "delete"


_PAST = {AlterAction.add: "added", AlterAction.change: "changed", AlterAction.delete: "deleted"}


class AlterKind(enum.StrEnum):
    variable = "variable"
    meter = "meter"
    event = "event"
    label = "label"
    limit = "limit"
    repeat = "repeat"
    trigger = "trigger"
    complete = "complete"


#: what `alter add` and `alter delete` take besides variables
_ATTRIBUTES = (AlterKind.event, AlterKind.meter, AlterKind.label)


class Role(enum.StrEnum):
    operator = "operator"
    read = "read"


def absolute(path: str) -> str:
    """``flow/t`` and ``/flow/t`` both mean ``/flow/t``."""
    return "/" + path.strip().strip("/")


def done(conn: Conn, result: Any, text: str) -> None:
    if conn.json:
        print_json(result)
    elif text:
        print(text)


def register(app: typer.Typer) -> None:
    """Add the user commands to ``app``."""
    token_app = typer.Typer(help="Manage access tokens.", no_args_is_help=True)
    app.add_typer(token_app, name="token")

    @client_command(app, "ping", help="Check that the server answers.")
    def ping(conn: Conn) -> None:
        r = conn.call("ping")
        done(
            conn,
            r,
            f"takler {r.get('version')} at {conn.where()}: {r.get('server_state')},"
            f" {r.get('flows')} flows, {r.get('tasks')} tasks",
        )

    @client_command(app, "show", help="Print a subtree with its attributes.")
    def show(
        conn: Conn,
        path: OptPathArg = None,
        vars_: Annotated[
            bool, typer.Option("--vars", help="Add variables and where each comes from.")
        ] = False,
    ) -> None:
        from takler_cli.show import show_lines

        args: dict[str, Any] = {"vars": vars_}
        if path:
            args["path"] = absolute(path)
        data = conn.call("show", **args)
        if conn.json:
            print_json(data)
            return
        console = Console(highlight=False, soft_wrap=True)
        for line in show_lines(data, args.get("path")):
            console.print(line)

    @client_command(app, "why", help="Explain what holds a node back.")
    def why(conn: Conn, path: PathArg) -> None:
        r = conn.call("why", path=absolute(path))
        reasons = r.get("reasons") or []
        lines = [f"{r.get('path')} is {r.get('state')}"]
        lines += [f"  - {reason}" for reason in reasons] or ["  nothing holds it back"]
        done(conn, r, "\n".join(lines))

    @client_command(app, "begin", help="Begin a flow: its tasks start running.")
    def begin(
        conn: Conn,
        flow: Annotated[str, typer.Argument(help="Flow name.", autocompletion=complete_path)],
        force: Annotated[bool, typer.Option(help="Begin even if tasks are running.")] = False,
    ) -> None:
        args: dict[str, Any] = {"path": absolute(flow)}
        if force:
            args["force"] = True
        done(conn, conn.call("begin", **args), f"begun {args['path']}")

    @client_command(app, "requeue", help="Put a node back to queued.")
    def requeue(
        conn: Conn,
        paths: PathsArg,
        reset_repeats: Annotated[bool, typer.Option(help="Reset repeats to their start.")] = False,
        force: Annotated[bool, typer.Option(help="Requeue even if tasks are running.")] = False,
    ) -> None:
        for path in paths:
            r = conn.call("requeue", path=absolute(path), reset_repeats=reset_repeats, force=force)
            done(conn, r, f"requeued {absolute(path)}")

    for verb, past, helptext in (
        ("suspend", "suspended", "Suspend nodes: nothing below is submitted."),
        ("resume", "resumed", "Resume suspended nodes."),
    ):
        _simple(app, verb, past, helptext)

    @client_command(app, "run", help="Submit a task now, ignoring its dependencies.")
    def run(
        conn: Conn,
        path: PathArg,
        force: Annotated[
            bool, typer.Option(help="Run even if a job of the task is running.")
        ] = False,
    ) -> None:
        r = conn.call("run", path=absolute(path), force=force)
        tryno = r.get("tryno") if isinstance(r, dict) else None
        done(conn, r, f"submitted {absolute(path)}" + (f" (try {tryno})" if tryno else ""))

    @client_command(app, "force", help="Force a node's state, or set/clear an event (PATH:EVENT).")
    def force(
        conn: Conn,
        state: Annotated[ForceState, typer.Argument(help="A state, or event-set / event-clear.")],
        path: PathArg,
        recursive: Annotated[
            bool, typer.Option("--recursive", "-r", help="Force every node below too.")
        ] = False,
    ) -> None:
        if state in (ForceState.event_set, ForceState.event_clear):
            if ":" not in path:
                raise CliExit(
                    EXIT_USAGE, f"takler force {state.value}: give the event as PATH:EVENT"
                )
            node, _, event = path.rpartition(":")
            target = f"{absolute(node)}:{event}"
            r = conn.call(
                "force", path=target, state="set" if state is ForceState.event_set else "clear"
            )
            done(conn, r, f"{'set' if state is ForceState.event_set else 'cleared'} {target}")
            return
        r = conn.call("force", path=absolute(path), state=state.value, recursive=recursive)
        done(conn, r, f"forced {absolute(path)} to {state.value}")

    @client_command(
        app, "kill", help="Kill the running jobs of a task or of every task below a family."
    )
    def kill(conn: Conn, path: PathArg) -> None:
        r = conn.call("kill", path=absolute(path))
        killed = r.get("killed", []) if isinstance(r, dict) else []
        done(conn, r, "\n".join(f"killed {p}" for p in killed) or f"killed {absolute(path)}")

    @client_command(app, "free-dep", help="Free a node's dependencies (trigger by default).")
    def free_dep(
        conn: Conn,
        path: PathArg,
        trigger: Annotated[bool, typer.Option(help="Free the trigger.")] = True,
        time: Annotated[bool, typer.Option("--time", help="Free time dependencies.")] = False,
        all_: Annotated[bool, typer.Option("--all", help="Free every dependency.")] = False,
    ) -> None:
        r = conn.call("free_dep", path=absolute(path), trigger=trigger, time=time, all=all_)
        done(conn, r, f"freed {absolute(path)}")

    @client_command(
        app,
        "alter",
        help="Add, change or delete an attribute: alter ACTION KIND PATH [NAME] [VALUE].",
    )
    def alter(
        conn: Conn,
        action: Annotated[AlterAction, typer.Argument(help="add, change or delete.")],
        kind: Annotated[AlterKind, typer.Argument(help="What to alter.")],
        path: PathArg,
        name: Annotated[
            str | None, typer.Argument(help="Attribute name (the expression for trigger/complete).")
        ] = None,
        value: Annotated[str | None, typer.Argument(help="New value.")] = None,
    ) -> None:
        args: dict[str, Any] = {"path": absolute(path), "action": action.value, "kind": kind.value}
        if kind is AlterKind.repeat:
            # alter change repeat PATH VALUE, or PATH NAME VALUE
            if name is None:
                raise CliExit(EXIT_USAGE, "takler alter: give the repeat's new value")
            if value is None:
                args["value"] = name
            else:
                args["name"], args["value"] = name, value
        elif kind in (AlterKind.trigger, AlterKind.complete):
            if action is not AlterAction.delete:
                if name is None:
                    raise CliExit(EXIT_USAGE, f"takler alter: give the {kind.value} expression")
                args["value"] = name if value is None else f"{name} {value}"
        else:
            if name is None:
                raise CliExit(EXIT_USAGE, f"takler alter: give the {kind.value} name")
            args["name"] = name
            if action is AlterAction.add and kind in _ATTRIBUTES:
                # event: its initial value (clear); meter: 'MIN MAX [THRESHOLD]'; label: its text
                if value is None and kind is AlterKind.meter:
                    raise CliExit(EXIT_USAGE, f"takler alter: give the range of {name}: 'MIN MAX'")
                if value is not None:
                    args["value"] = value
            elif action is not AlterAction.delete:
                if value is None and kind is not AlterKind.event:
                    raise CliExit(EXIT_USAGE, f"takler alter: give the new value of {name}")
                args["value"] = _typed(kind, value)
        done(
            conn,
            conn.call("alter", **args),
            f"{_PAST[action]} {kind.value}{' ' + args['name'] if 'name' in args else ''}"
            f" on {args['path']}",
        )

    @client_command(app, "delete", help="Delete a node (a flow or anything below).")
    def delete(
        conn: Conn,
        path: PathArg,
        force: Annotated[bool, typer.Option(help="Delete even if tasks are running.")] = False,
    ) -> None:
        done(
            conn, conn.call("delete", path=absolute(path), force=force), f"deleted {absolute(path)}"
        )

    @client_command(
        app, "load", help="Load the flows of a file (.py, .def, .json) into the server."
    )
    def load(
        conn: Conn,
        file: Annotated[Path, typer.Argument(help="Flow file.")],
        replace: Annotated[bool, typer.Option(help="Replace flows of the same name.")] = False,
    ) -> None:
        flows = _definitions(conn, file)
        r = conn.call("load", flows=flows, replace=replace)
        names = r.get("loaded", []) if isinstance(r, dict) else []
        done(conn, r, f"loaded {', '.join(names)}")

    @client_command(app, "replace", help="Replace a flow by the one of the same name in FILE.")
    def replace(
        conn: Conn,
        path: PathArg,
        file: Annotated[Path, typer.Argument(help="Flow file.")],
    ) -> None:
        name = absolute(path).strip("/").split("/")[0]
        flows = [f for f in _definitions(conn, file) if f.get("name") == name]
        if not flows:
            raise CliExit(EXIT_USAGE, f"takler replace: {file} defines no flow {name}")
        done(conn, conn.call("replace", path=f"/{name}", flow=flows[0]), f"replaced /{name}")

    @client_command(
        app, "export-def", help="Print flows as an ecFlow definition (.def) that ecFlow loads."
    )
    def export_def(
        conn: Conn,
        path: Annotated[
            str | None,
            typer.Argument(
                help="The flow, e.g. /suite (default: every flow).", autocompletion=complete_path
            ),
        ] = None,
        state: Annotated[
            bool,
            typer.Option(
                "--state", help="Write the state-carrying (checkpoint) form: states and values."
            ),
        ] = False,
    ) -> None:
        import sys

        from takler.codec import load_flow
        from takler.ecflow.export import export_def as write_def

        if path and absolute(path) != "/":
            name = absolute(path).strip("/").split("/")[0]
            dumps = [conn.call("show", path=f"/{name}")]
        else:
            dumps = conn.call("show").get("flows") or []
        text = write_def([load_flow(data) for data in dumps], with_state=state)
        if conn.json:
            print_json({"def": text})
        else:
            sys.stdout.write(text)

    @client_command(app, "zombies", help="List refused child commands (zombies).")
    def zombies(conn: Conn) -> None:
        rows = conn.call("zombies")
        if conn.json:
            print_json(rows)
        else:
            print_table(rows, ["path", "tryno", "command", "count", "time", "reason"], "no zombies")

    @client_command(app, "history", help="Past submissions of a node's tasks.")
    def history(conn: Conn, path: OptPathArg = None) -> None:
        args = {"path": absolute(path)} if path else {}
        rows = conn.call("history", **args)
        if conn.json:
            print_json(rows)
        else:
            cols = [
                "path",
                "tryno",
                "runner",
                "rid",
                "submitted_at",
                "started_at",
                "ended_at",
                "exit",
                "reason",
            ]
            print_table(rows, cols, "no history")

    @client_command(
        app, "checkpoint", help="Save the server's whole state as JSON (to FILE or stdout)."
    )
    def checkpoint(
        conn: Conn, file: Annotated[Path | None, typer.Argument(help="Output file.")] = None
    ) -> None:
        import json

        data = conn.call("checkpoint")
        if file is None:
            print_json(data)
            return
        # It holds job passwords: private from the first byte.
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode otherwise
            out.write(json.dumps(data, indent=1, default=str) + "\n")
        print(f"checkpoint written to {file}")

    for verb, helptext in (
        ("shutdown", "Stop submitting; keep accepting child commands."),
        ("halt", "Stop submitting and refuse child commands (jobs retry)."),
        ("restart", "Resume normal running after shutdown or halt."),
        ("stop", "Stop the server process."),
    ):
        _server_state(app, verb, helptext)

    @client_command(token_app, "add", help="Create a token; prints it once.")
    def token_add(
        conn: Conn,
        name: Annotated[str, typer.Argument(help="Token name.")],
        role: Annotated[Role, typer.Option(help="operator or read (read-only).")] = Role.operator,
    ) -> None:
        r = conn.call("token_add", name=name, role=role.value)
        done(conn, r, str(r.get("token")))

    @client_command(token_app, "list", help="List tokens (names and roles, never the secrets).")
    def token_list(conn: Conn) -> None:
        rows = conn.call("token_list")
        if conn.json:
            print_json(rows)
        else:
            print_table(rows, ["name", "role", "created"], "no tokens")

    @client_command(token_app, "revoke", help="Revoke a token.")
    def token_revoke(conn: Conn, name: Annotated[str, typer.Argument(help="Token name.")]) -> None:
        done(conn, conn.call("token_revoke", name=name), f"revoked {name}")


def _simple(app: typer.Typer, verb: str, past: str, helptext: str) -> None:
    @client_command(app, verb, help=helptext)
    def command(conn: Conn, paths: PathsArg) -> None:
        for path in paths:
            done(conn, conn.call(verb, path=absolute(path)), f"{past} {absolute(path)}")


def _server_state(app: typer.Typer, verb: str, helptext: str) -> None:
    @client_command(app, verb, help=helptext)
    def command(conn: Conn) -> None:
        try:
            r = conn.call(verb)
        except ConnectionError as exc:
            # A stopping server may close the connection before its reply gets out.
            if verb != "stop" or "connection lost" not in str(exc):
                raise
            r = {"stopping": True}
        state = r.get("server_state") if isinstance(r, dict) else None
        done(conn, r, f"server {state}" if state else "server stopping")


def _typed(kind: AlterKind, value: str | None) -> Any:
    if kind is AlterKind.event:
        return value if value is not None else "set"
    if kind in (AlterKind.meter, AlterKind.limit):
        try:
            return int(value or "")
        except ValueError:
            raise CliExit(
                EXIT_USAGE, f"takler alter: {kind.value} value must be an integer, not {value!r}"
            ) from None
    return value


def _definitions(conn: Conn, file: Path) -> list[dict[str, Any]]:
    """The flows of ``file`` as definition data: the server never runs client code."""
    from takler.codec import dump_node
    from takler_cli.flowfile import load_flows

    flows = load_flows(file, home=conn.home)
    return [dump_node(f, state=False) for f in flows]
