"""Reaching the server from a command: the shared client options and one-call helpers.

:func:`client_command` gives a command the options every client command has
(``--host --port --home --token --cafile --json``) and turns any failure into
one line on stderr and the exit code of :mod:`takler_cli.output`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import attrs
import trio
import typer

from takler.core.errors import TaklerError
from takler_cli.output import EXIT_SERVER_ERROR, CliExit, describe, error_line, exit_code_for

#: how long a command waits for the server to answer
CALL_TIMEOUT = 30.0


@attrs.frozen
class Conn:
    """Where and how to reach the server, as the command line gave it."""

    host: str | None = None
    port: int | None = None
    home: Path | None = None
    token: str | None = None
    cafile: Path | None = None
    json: bool = False
    command: str = ""

    def address(self) -> Any:
        """The server address: options, then ``TAKLER_*`` variables, then ``<home>/server.json``."""
        from takler.client.discover import find_server

        return find_server(
            home=self.home,
            host=self.host,
            port=self.port,
            token=self.token,
            cafile=str(self.cafile) if self.cafile else None,
        )

    def open(self, timeout: float = CALL_TIMEOUT) -> Any:
        """An async context manager giving a connected client."""
        from takler.client.client import open_client

        addr = self.address()
        return open_client(
            addr.host,
            addr.port,
            token=addr.token,
            cafile=addr.cafile,
            tls=addr.tls,
            timeout=timeout,
        )

    def where(self) -> str:
        try:
            addr = self.address()
        except TaklerError:
            return "?"
        return f"{addr.host}:{addr.port}"

    def call(self, command: str, **args: Any) -> Any:
        """Send one command and return its result (runs its own Trio loop)."""

        async def one() -> Any:
            async with self.open() as client:
                return await client.call(command, **args)

        return trio.run(one)


HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Server host (default $TAKLER_HOST, server.json, 127.0.0.1)."),
]
PortOpt = Annotated[
    int | None,
    typer.Option("--port", help="Server port (default $TAKLER_PORT, server.json, 33083)."),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home", help="takler home holding server.json (default $TAKLER_HOME, ~/.takler)."
    ),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="Access token (default $TAKLER_TOKEN, server.json).")
]
CafileOpt = Annotated[
    Path | None,
    typer.Option("--cafile", help="CA certificate to trust for TLS (default $TAKLER_CAFILE)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

_COMMON = (
    ("host", HostOpt, None),
    ("port", PortOpt, None),
    ("home", HomeOpt, None),
    ("token", TokenOpt, None),
    ("cafile", CafileOpt, None),
    ("json_", JsonOpt, False),
)


def client_command(
    app: typer.Typer, name: str, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``func(conn, ...)`` as command ``name`` with the client options added.

    ``func`` takes a :class:`Conn` first; its other parameters are the
    command's own. Errors become one line and an exit code.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func, eval_str=True)
        own = list(sig.parameters.values())[1:]
        common = [
            inspect.Parameter(
                pname, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann
            )
            for pname, ann, default in _COMMON
        ]

        @functools.wraps(func)
        def wrapper(**values: Any) -> Any:
            conn = Conn(
                host=values.pop("host"),
                port=values.pop("port"),
                home=values.pop("home"),
                token=values.pop("token"),
                cafile=values.pop("cafile"),
                json=values.pop("json_"),
                command=name,
            )
            return run_guarded(name, lambda: func(conn, **values))

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + common
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the new signature, not the original
        app.command(name, **kwargs)(wrapper)
        return func

    return decorate


def run_guarded(name: str, body: Callable[[], Any]) -> Any:
    """Run a command body; print any failure as one line and exit with its code."""
    try:
        return body()
    except (typer.Exit, typer.Abort):
        raise
    except BaseException as raised:
        exc = unwrap(raised)
        if isinstance(exc, KeyboardInterrupt):
            raise typer.Exit(130) from None
        if isinstance(exc, CliExit):
            code, message = exc.code, exc.message
        elif isinstance(exc, TaklerError | OSError):
            code, message = exit_code_for(exc), f"takler {name}: {describe(exc)}"
        elif isinstance(exc, Exception):
            code = EXIT_SERVER_ERROR
            message = f"takler {name}: internal error: {type(exc).__name__}: {describe(exc)}"
        else:
            raise
        if message:
            error_line(message)
        raise typer.Exit(code) from None


def unwrap(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
