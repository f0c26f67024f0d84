"""Opening and closing the server's parts: logging, store, auth, hub, service, runners."""

from __future__ import annotations

import ipaddress
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


#: the ``takler`` logger's (propagate, level) before a server configured it
_saved_logging: tuple[bool, int] | None = None


def setup_logging(server: TaklerServer) -> None:
    """One line per event in ``<home>/takler.log``, and on the console with rich.

    The ``takler`` logger's handlers, level and propagation stay so until
    :func:`teardown_logging` (the last server started in a process wins).
    """
    global _saved_logging
    root = logging.getLogger("takler")
    if _saved_logging is None:
        _saved_logging = (root.propagate, root.level)
    level = getattr(logging, server.log_level.upper(), logging.INFO)
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_takler", False):
            root.removeHandler(handler)
            handler.close()
    file_handler: logging.Handler | None
    try:
        file_handler = logging.FileHandler(server.log_file, encoding="utf-8")
    except OSError as e:  # a read-only or full home: the console still logs
        file_handler = None
        problem = f"cannot write the log {server.log_file}: {e.strerror or e}"
    if file_handler is not None:
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
    server._log_handlers = [h for h in root.handlers if getattr(h, "_takler", False)]
    if file_handler is None:
        log.warning("%s", problem)


def teardown_logging(server: TaklerServer) -> None:
    """Remove the server's handlers; once no server's are left, give the
    ``takler`` logger back its level and propagation (an embedding program's
    own logging, or pytest's, sees takler's records again)."""
    global _saved_logging
    root = logging.getLogger("takler")
    for handler in server._log_handlers:
        if handler in root.handlers:
            root.removeHandler(handler)
            handler.close()
    server._log_handlers = []
    if _saved_logging is not None and not any(
        getattr(h, "_takler", False) for h in root.handlers
    ):
        root.propagate, level = _saved_logging
        root.setLevel(level)
        _saved_logging = None


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
    if not _is_loopback(server.host) and server.certfile is None:
        log.warning(
            "listening on %s without TLS: tokens and job passwords cross the network in clear;"
            " use --certfile/--keyfile",
            server.host,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_stored(server: TaklerServer) -> Bunch | None:
    """The stored (or checkpointed) bunch, or None to keep the current one. Blocking."""
    from takler.codec import load_bunch, loads
    from takler.server.server import ServerState
    from takler.server.store import SERVER_STATE

    if server.restore is not None:
        try:
            text = server.restore.read_text(encoding="utf-8")
        except OSError as e:
            raise TaklerError(f"cannot read checkpoint {server.restore}: {e.strerror or e}") from None
        data = loads(text)
        # `checkpoint` adds the server state to the bunch.
        extra = data.pop("server", None) if isinstance(data, dict) else None
        bunch = load_bunch(data)
        state = extra.get("state") if isinstance(extra, dict) else None
        if state in ("shutdown", "halted"):
            server.state = ServerState(state)
        log.info("restored %d flows from %s", len(bunch.flows), server.restore)
        return bunch
    if server.store is not None and not server.fresh:
        bunch = server.store.load()
        if bunch.flows:
            log.info("restored %d flows from the store", len(bunch.flows))
        state = server.store.get_kv(SERVER_STATE)
        if state in ("shutdown", "halted"):
            server.state = ServerState(state)
        return bunch
    return None


def _save_restored(server: TaklerServer) -> None:
    """Replace the store's content with the restored checkpoint. Blocking."""
    from takler.server.store import SERVER_STATE

    server.store.save_all(server.bunch)
    server.store.put_kv(SERVER_STATE, server.state.value)


def _close_lost_history(server: TaklerServer, open_rows: list[tuple[str, int, str | None]]) -> None:
    """Close the job records left open by a server that stopped abruptly.

    A job's end is written with the next commit after it is seen, at most
    ``FLUSH_DELAY`` later; a server killed in between leaves the record open.
    Only the record of a task's current job, still running, stays open: that
    job is adopted and its end recorded when it comes. Any other ended while no
    server watched it, when its task completed or aborted (the current try),
    or by now (an earlier one).
    """
    from takler.core.node import Task
    from takler.core.status import RUNNING

    now = server.now()
    for path, tryno, rid in open_rows:
        node = server.bunch.get_node(path)
        task = node if isinstance(node, Task) and node.tryno == tryno else None
        if task is not None and task.rid not in (None, rid):
            task = None  # the same try number, of a run since requeued
        if task is not None and task.status in RUNNING:
            continue
        ended = task.state_since if task is not None and task.state_since else now
        server.note_history(
            "update", path, tryno, rid, ended_at=ended, exit="lost",
            reason="ended while no server watched it",
        )  # fmt: skip


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


def _open_store(server: TaklerServer) -> Any:
    """Open the store; in a home that cannot be written, read-only (the server
    then refuses changes). A damaged store is an error, and left as it is. Blocking."""
    from takler.server.store import DB_NAME, Store, StoreError

    try:
        return Store.open(server.home)
    except StoreError as e:
        db = server.home / DB_NAME
        writable = os.access(server.home, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))
        if writable:
            raise
        store = Store.open(server.home, read_only=True)
        server.read_only_reason = f"{server.home} is read-only"
        log.error(
            "store: %s (%s); serving read-only, changes are refused", server.read_only_reason, e
        )
        return store


async def open_parts(server: TaklerServer) -> None:
    from takler.server.auth import Auth, write_server_file
    from takler.server.dispatch import Dispatcher
    from takler.server.hub import Hub
    from takler.server.service import Service, ServiceConfig
    from takler.tasks.render import job_bin_dir

    server.home.mkdir(parents=True, exist_ok=True)
    setup_logging(server)
    log.info("start server... (home %s)", server.home)
    if server.use_store:
        server.store = await trio.to_thread.run_sync(_open_store, server)
        if server.fresh:
            await trio.to_thread.run_sync(server.store.clear)
    restored = await trio.to_thread.run_sync(_load_stored, server)
    if restored is not None:
        _adopt_bunch(server, restored)
    if server.restore is not None and server.store is not None:
        await trio.to_thread.run_sync(_save_restored, server)
    if server.store is not None:
        _close_lost_history(server, await trio.to_thread.run_sync(server.store.open_history))
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
        dispatcher,
        server.hub,
        server.auth,
        ServiceConfig(
            ssl_context=ssl_context,
            max_message_size=server.max_message_size,
            max_operator_message_size=server.max_operator_message_size,
        ),
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
        try:
            write_server_file(
                server.home,
                host=server.host,
                port=server.port,
                token=token,
                pid=os.getpid(),
                version=takler.__version__,
                tls=server.certfile is not None,
                cafile=str(server.job_cafile) if server.job_cafile is not None else None,
            )
        except OSError as e:
            log.warning("cannot write the server file in %s: %s", server.home, e.strerror or e)
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
        server.store.close()
    log.info("server stopped")
    teardown_logging(server)
    sys.stdout.flush()
