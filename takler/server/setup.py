"""Opening and closing the server's parts: logging, store, auth, hub, service, runners."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

import trio

import takler
from takler.core.bunch import Bunch
from takler.core.errors import TaklerError

if TYPE_CHECKING:
    from takler.server.server import TaklerServer

log = logging.getLogger("takler.server")


def setup_logging(server: TaklerServer) -> None:
    """One line per event in ``<home>/takler.log``, and on the console with rich."""
    root = logging.getLogger("takler")
    level = getattr(logging, server.log_level.upper(), logging.INFO)
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_takler", False):
            root.removeHandler(handler)
            handler.close()
    file_handler = logging.FileHandler(server.log_file, encoding="utf-8")
    file_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    file_handler._takler = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    if server.console:
        from rich.logging import RichHandler

        console_handler = RichHandler(show_path=False, rich_tracebacks=False)
        console_handler._takler = True  # type: ignore[attr-defined]
        root.addHandler(console_handler)
    root.propagate = False


def _default_runners() -> dict[str, Any]:
    from takler.runners import RunnerSet

    return RunnerSet.standard().runners


async def _bind(server: TaklerServer) -> None:
    if server._given_listeners is not None:
        server._listeners = list(server._given_listeners)
        return
    try:
        listeners = await trio.open_tcp_listeners(server.port, host=server.host)
    except OSError as e:
        raise TaklerError(f"cannot listen on {server.host}:{server.port}: {e.strerror or e}") from None
    server._listeners = list(listeners)
    sock = listeners[0].socket
    server.port = sock.getsockname()[1]
    if server.host not in ("127.0.0.1", "localhost", "::1") and server.certfile is None:
        log.warning(
            "listening on %s without TLS: tokens and job passwords cross the network in clear;"
            " use --certfile/--keyfile",
            server.host,
        )


def _load_stored(server: TaklerServer) -> Bunch | None:
    """The stored (or checkpointed) bunch, or None to keep the current one. Blocking."""
    from takler.codec import load_bunch, loads
    from takler.server.server import ServerState

    if server.restore is not None:
        try:
            text = server.restore.read_text(encoding="utf-8")
        except OSError as e:
            raise TaklerError(f"cannot read checkpoint {server.restore}: {e.strerror or e}") from None
        bunch = load_bunch(loads(text))
        log.info("restored %d flows from %s", len(bunch.flows), server.restore)
        return bunch
    if server.store is not None and not server.fresh:
        bunch = server.store.load()
        if bunch.flows:
            log.info("restored %d flows from the store", len(bunch.flows))
        state = server.store.get_kv("server_state")
        if state in ("shutdown", "halted"):
            server.state = ServerState(state)
        return bunch
    return None


def _adopt_bunch(server: TaklerServer, bunch: Bunch) -> None:
    """Replace the bunch with a restored one.

    Flows added to ``server.bunch`` before start join the restored bunch,
    except where a stored flow has the same name: the stored state wins.
    """
    early = list(server.bunch.flows.values())
    for flow in early:
        server.bunch.delete_flow(flow.name)
    for key, value in server.bunch.parameters.items():
        bunch.parameters.setdefault(key, value)
    server.bunch = bunch
    for flow in early:
        server._add_flow_now(flow, begin=False)


async def open_parts(server: TaklerServer) -> None:
    from takler.server.auth import Auth, write_server_file
    from takler.server.dispatch import Dispatcher
    from takler.server.hub import Hub
    from takler.server.service import Service, ServiceConfig
    from takler.server.store import Store
    from takler.tasks.render import job_bin_dir

    server.home.mkdir(parents=True, exist_ok=True)
    setup_logging(server)
    log.info("start server... (home %s)", server.home)
    if server.use_store:
        server.store = await trio.to_thread.run_sync(Store.open, server.home)
        if server.fresh:
            await trio.to_thread.run_sync(server.store.clear)
    restored = await trio.to_thread.run_sync(_load_stored, server)
    if restored is not None:
        _adopt_bunch(server, restored)
    if server.restore is not None and server.store is not None:
        await trio.to_thread.run_sync(server.store.save_all, server.bunch)
    await _bind(server)
    bunch = server.bunch
    bunch.now = server.now()
    bunch.parameters.setdefault("TAKLER_HOME", str(server.home))
    bunch.parameters["TAKLER_HOST"] = _job_host(server.host)
    bunch.parameters["TAKLER_PORT"] = server.port
    bunch.parameters["TAKLER_VERSION"] = takler.__version__
    if server.job_cafile is not None:
        bunch.parameters["TAKLER_CAFILE"] = str(server.job_cafile)

    server.auth, token = Auth.open(server.home)
    server.token = token
    dispatcher = Dispatcher(server)
    server.hub = Hub(dispatcher.snapshot)
    ssl_context = None
    if server.certfile is not None:
        from takler.server.tls import server_ssl_context

        ssl_context = server_ssl_context(server.certfile, server.keyfile)
    server.service = Service(
        dispatcher, server.hub, server.auth, ServiceConfig(ssl_context=ssl_context)
    )
    runners = server._runners if server._runners is not None else _default_runners()
    from takler.server.jobs import Jobs, new_password
    from takler.server.scheduler import Scheduler

    server.jobs = Jobs(runners, server.commit, job_bin_dir(), dispatcher.record_history)
    server.scheduler = Scheduler(
        server.bunch, server.now, server.submit_job, server.commit, server.may_submit, new_password
    )
    server._trio_token = trio.lowlevel.current_trio_token()
    if server._given_listeners is None:
        write_server_file(
            server.home,
            host=server.host,
            port=server.port,
            token=token,
            pid=os.getpid(),
            version=takler.__version__,
            tls=server.certfile is not None,
        )
    log.info("service started: %s:%d", server.host, server.port)
    log.info("start server...done")


def _job_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return host


async def close_parts(server: TaklerServer) -> None:
    for listener in server._listeners:
        try:
            await listener.aclose()
        except (OSError, trio.ClosedResourceError):
            pass
    if server.store is not None:
        try:
            await server.commit()
        except TaklerError as e:
            log.error("final commit failed: %s", e)
        server.store.put_kv("server_state", server.state.value)
        server.store.close()
    log.info("server stopped")
    sys.stdout.flush()
