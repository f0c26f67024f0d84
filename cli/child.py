"""``takler child ...``: the child commands a job sends, from the shell.

Kept lean (argparse and the stdlib child client, no typer, rich or trio) so
it starts fast; jobs that need it faster use the bash functions of the
standard head or ``ecflow_client``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from takler.client.child import ChildClient, ChildCommandError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 4


def main(argv: list[str]) -> int:
    """Run ``takler child`` with the arguments that follow ``child``.

    Returns:
        0 ok, 1 refused by the server, 2 usage or environment error,
        4 server unreachable until the timeout.
    """
    parser = _parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors by exiting
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    env = dict(os.environ)
    for option, name in _OVERRIDES.items():
        value = getattr(ns, option, None)
        if value is not None:
            env[name] = str(value)
    try:
        client = ChildClient.from_env(env)
        _run(client, ns)
    except ChildCommandError as exc:
        print(f"takler child {ns.command}: {exc}", file=sys.stderr)
        if exc.code == "bad_environment":
            return EXIT_USAGE
        return EXIT_UNREACHABLE if exc.code == "unreachable" else EXIT_REFUSED
    return EXIT_OK


_OVERRIDES = {
    "host": "TAKLER_HOST",
    "port": "TAKLER_PORT",
    "path": "TAKLER_NAME",
    "password": "TAKLER_PASSWORD",
    "tryno": "TAKLER_TRYNO",
    "timeout": "TAKLER_TIMEOUT",
    "cafile": "TAKLER_CAFILE",
}


def _run(client: ChildClient, ns: argparse.Namespace) -> None:
    command = ns.command
    if command == "init":
        rid = os.environ.get("TAKLER_RID", "")
        client.init(ns.pid if ns.pid is not None else int(rid) if rid.isdigit() else os.getppid())
    elif command == "event":
        client.event(ns.name, ns.value == "set")
    elif command == "meter":
        client.meter(ns.name, ns.value)
    elif command == "label":
        client.label(ns.name, " ".join(ns.text))
    elif command == "wait":
        client.wait(" ".join(ns.expression))
    elif command == "complete":
        client.complete()
    else:
        client.abort(" ".join(ns.reason))


def _parser() -> argparse.ArgumentParser:
    # SUPPRESS defaults let the connection options go before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    options: list[tuple[str, dict[str, Any]]] = [
        ("--host", {"help": "server host (default $TAKLER_HOST)"}),
        ("--port", {"type": int, "help": "server port (default $TAKLER_PORT)"}),
        ("--path", {"help": "task path (default $TAKLER_NAME)"}),
        ("--password", {"help": "job password (default $TAKLER_PASSWORD)"}),
        ("--tryno", {"type": int, "help": "try number (default $TAKLER_TRYNO)"}),
        (
            "--timeout",
            {"type": float, "help": "seconds to retry (default $TAKLER_TIMEOUT or 86400)"},
        ),
        ("--cafile", {"help": "CA file for TLS (default $TAKLER_CAFILE)"}),
    ]
    for flag, kwargs in options:
        common.add_argument(flag, default=argparse.SUPPRESS, **kwargs)
    parser = argparse.ArgumentParser(
        prog="takler child", parents=[common], description="Send a child command to the server."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=summary, description=summary)

    add("init", "the job started").add_argument(
        "pid", nargs="?", type=int, help="job process id (default $TAKLER_RID)"
    )
    event = add("event", "set or clear an event")
    event.add_argument("name")
    event.add_argument("value", nargs="?", choices=["set", "clear"], default="set")
    meter = add("meter", "set a meter")
    meter.add_argument("name")
    meter.add_argument("value", type=int)
    label = add("label", "set a label's text")
    label.add_argument("name")
    label.add_argument("text", nargs="*")
    add("wait", "block until an expression holds").add_argument("expression", nargs="+")
    add("complete", "the job finished its work")
    add("abort", "the job failed").add_argument("reason", nargs="*")
    return parser
