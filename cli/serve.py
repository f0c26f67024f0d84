"""``takler serve``, ``takler demo`` and ``takler log``: running a server and reading its log."""

from __future__ import annotations

import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import trio
import typer
from rich.console import Console

from takler_cli.connect import run_guarded
from takler_cli.output import EXIT_USAGE, CliExit

if TYPE_CHECKING:
    from takler.server import TaklerServer


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``demo`` and ``log`` to ``app``."""

    @app.command("serve", help="Run a server with the flows of FLOW_FILE (.py, .def or .json).")
    def serve(
        flow_file: Annotated[
            Path, typer.Argument(help="Flow file: .py (create_flow()...), .def or .json.")
        ],
        host: Annotated[
            str | None, typer.Option(help="Address to bind (default $TAKLER_HOST or 127.0.0.1).")
        ] = None,
        port: Annotated[
            int | None,
            typer.Option(help="Port to bind (default $TAKLER_PORT or 33083; 0: any free port)."),
        ] = None,
        home: Annotated[
            Path | None, typer.Option(help="Server home (default $TAKLER_HOME or ~/.takler).")
        ] = None,
        begin: Annotated[bool, typer.Option("--begin", help="Begin the flows at once.")] = False,
        until_complete: Annotated[
            bool,
            typer.Option(
                "--until-complete",
                help="Exit when every flow completes (0) or is stuck on aborted tasks (1).",
            ),
        ] = False,
        fresh: Annotated[bool, typer.Option("--fresh", help="Ignore the stored state.")] = False,
        restore: Annotated[
            Path | None, typer.Option(help="Start from this checkpoint JSON.")
        ] = None,
        certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
        keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
        cafile: Annotated[
            Path | None,
            typer.Option(
                help="CA certificate that jobs and local clients trust (default: the certfile)."
            ),
        ] = None,
        log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
        view: Annotated[
            bool, typer.Option("--view", help="Show the live view in this terminal.")
        ] = False,
        max_message_size: Annotated[
            int,
            typer.Option(help="Largest request in bytes (and child command body)."),
        ] = 1 << 20,
        max_operator_message_size: Annotated[
            int,
            typer.Option(
                help="Largest request in bytes from an operator token given at connect"
                " (a load of 100,000 tasks is ~9 MB)."
            ),
        ] = 64 << 20,
    ) -> None:
        def body() -> int:
            from takler.server import TaklerServer
            from takler_cli.flowfile import load_flows

            if (certfile is None) != (keyfile is None):
                raise CliExit(EXIT_USAGE, "takler serve: --certfile and --keyfile go together")
            if cafile is not None and certfile is None:
                raise CliExit(EXIT_USAGE, "takler serve: --cafile needs --certfile")
            server = TaklerServer(
                host,
                port,
                home,
                certfile=certfile,
                keyfile=keyfile,
                job_cafile=cafile,
                fresh=fresh,
                restore=restore,
                log_level=log_level,
                console=not view,
                max_message_size=max_message_size,
                max_operator_message_size=max_operator_message_size,
            )
            flows = load_flows(flow_file, home=server.home)
            if not view:
                from takler.visitor import PrintVisitor, pre_order_travel

                for flow in flows:
                    pre_order_travel(flow, PrintVisitor(sys.stdout))
                sys.stdout.flush()
            server.add_flows(flows, begin=begin)
            return trio.run(run_server, server, until_complete, view)

        raise typer.Exit(run_guarded("serve", body))

    @app.command("demo", help="Run the demo flow to completion in a temporary home, then exit.")
    def demo(
        view: Annotated[
            bool | None,
            typer.Option("--view/--no-view", help="Live view (default: when on a terminal)."),
        ] = None,
        keep: Annotated[
            bool, typer.Option("--keep", help="Keep the temporary home (jobs, outputs, log).")
        ] = False,
    ) -> None:
        raise typer.Exit(run_guarded("demo", lambda: run_demo(view, keep)))

    @app.command("log", help="Print the end of the server log; -f follows it.")
    def log(
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
        ] = False,
        lines: Annotated[
            int, typer.Option("--lines", "-n", help="How many lines to print first.")
        ] = 20,
        home: Annotated[
            Path | None, typer.Option(help="Server home (default $TAKLER_HOME or ~/.takler).")
        ] = None,
    ) -> None:
        run_guarded("log", lambda: tail_log(log_path(home), lines, follow))


async def run_server(server: TaklerServer, until_complete: bool, view: bool) -> int:
    """Start ``server`` and run it (with the live view when ``view``) until it stops.

    Returns:
        The server's exit status (with ``until_complete``: 0 complete, 1 stuck).
    """
    from takler.server.server import tune_gc

    await server.start()
    tune_gc()
    if not view:
        return await server.run(until_complete=until_complete)
    from takler_cli.watch import StreamClosed, watch_stream

    status = 0

    async def serve_then_stop_view(scope: trio.CancelScope) -> None:
        nonlocal status
        status = await server.run(until_complete=until_complete)
        scope.cancel()

    async def reason(path: str) -> str | None:
        node = server.bunch.get_node(path)
        return getattr(node, "reason", None)

    console = Console()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_then_stop_view, nursery.cancel_scope)
        title = f"{server.host}:{server.port}"
        while True:
            subscription = server.hub.open_subscription(None)
            try:
                await watch_stream(
                    subscription,
                    console,
                    title=title,
                    progress=until_complete,
                    reason_lookup=reason,
                )
            except StreamClosed:
                continue  # dropped (too slow): a new subscription starts from a fresh snapshot
            finally:
                subscription.close()
            break
    return status


def run_demo(view: bool | None, keep: bool) -> int:
    """Run the demo flow to completion on a free port in a temporary home.

    Returns:
        0 when the flow completed, 1 otherwise.
    """
    from takler import demo
    from takler.server import TaklerServer

    if view is None:
        view = sys.stdout.isatty()
    home = Path(tempfile.mkdtemp(prefix="takler-demo-"))
    try:
        flow = demo.create_flow(home)
        tasks = sum(1 for _ in flow.tasks())
        server = TaklerServer("127.0.0.1", 0, home, fresh=True, console=False)
        server.add_flows([flow], begin=True)
        started = time.monotonic()
        status = trio.run(run_server, server, True, view)
        elapsed = time.monotonic() - started
        if not view:
            _print_final(server)
        outcome = "complete" if status == 0 else "did not complete"
        print(f"demo: flow {demo.FLOW_NAME} ({tasks} tasks) {outcome} in {elapsed:.1f} s")
        if keep:
            print(f"demo: jobs, outputs and takler.log are in {home}")
        return 0 if status == 0 else 1
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def _print_final(server: Any) -> None:
    from takler.codec import dump_bunch
    from takler_cli.view import render
    from takler_cli.viewmodel import ViewModel

    model = ViewModel()
    model.apply_snapshot(dump_bunch(server.bunch), time.time())
    model.server_state = server.state.value
    Console(highlight=False).print(render(model, time.time(), title="demo", fold=False))


def log_path(home: Path | None) -> Path:
    if home is None:
        env = os.environ.get("TAKLER_HOME")
        home = Path(env) if env else Path.home() / ".takler"
    return home / "takler.log"


def tail_log(path: Path, lines: int, follow: bool, *, poll: float = 0.25) -> None:
    """Print the last ``lines`` lines of ``path``; with ``follow``, then every new line until interrupted."""
    if not path.is_file():
        raise CliExit(1, f"takler log: no log at {path} (has a server run with this home?)")
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line in collections.deque(f, maxlen=max(lines, 0)):
            sys.stdout.write(line)
        sys.stdout.flush()
        if not follow:
            return
        try:
            while True:
                line = f.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    # A file has no change notification we can wait on portably; poll gently.
                    time.sleep(poll)
        except KeyboardInterrupt:
            return
