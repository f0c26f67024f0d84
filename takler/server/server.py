"""TaklerServer: one Trio nursery running the scheduler, the service and the jobs.

``await server.start()`` binds the port and restores the store;
``await server.run()`` serves until stopped. Both work under ``trio.run`` and,
through Trio's guest mode, under ``asyncio.run``.
"""

from __future__ import annotations

import datetime as dt
import enum
import gc
import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

from takler.core import ops
from takler.core.bunch import Bunch
from takler.core.change import Change, ChangeKind
from takler.core.errors import StateError, TaklerError
from takler.core.node import Flow, Task
from takler.core.status import RUNNING, NodeStatus
from takler.server.jobs import Jobs
from takler.server.scheduler import Scheduler
from takler.server.threads import run_sync

log = logging.getLogger("takler.server")

DEFAULT_PORT = 33083
SHUTDOWN_GRACE = 1.0


class ServerState(enum.Enum):
    """As ecFlow: ``running`` submits; ``shutdown`` accepts child commands but
    submits nothing; ``halted`` refuses child commands too (jobs retry)."""

    running = "running"
    shutdown = "shutdown"
    halted = "halted"


#: allocations between collections of the youngest generation (Python's default: 700)
GC_THRESHOLD = 20_000


def tune_gc() -> None:
    """Tune the cyclic garbage collector for a process that is a server.

    Everything alive now (the interpreter, the modules, a flow loaded at
    start) is moved out of the collector's sight (:func:`gc.freeze`), so
    full collections no longer walk it; and the youngest generation is
    collected every ``GC_THRESHOLD`` allocations instead of every 700. Most
    of the server's garbage (requests, replies, changes) is freed by
    reference counting; a collection walks what is still alive, and every
    700 allocations it kept finding the objects of requests in flight, only
    to promote them and walk them again in the next generation.

    Process-wide: ``takler serve`` calls it once started; a program that
    embeds a server decides for itself.

    Only the young generations are collected first: a flow loaded or restored
    is already in the oldest (see :func:`~takler.core.bunch.gc_paused`), and
    a full collection would walk all of it, 75-85 ms for 100,000 tasks, on
    the way to a server that answers. What garbage the oldest generation
    holds is frozen with it, once: after a 100k-task load or restore, a full
    collection found 60-150 objects.
    """
    gc.collect(1)
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


def default_home() -> Path:
    home = os.environ.get("TAKLER_HOME")
    return Path(home) if home else Path.home() / ".takler"


class TaklerServer:
    """The takler server.

    Args:
        host: address to bind; default ``$TAKLER_HOST`` or 127.0.0.1 (loopback).
        port: port to bind; default ``$TAKLER_PORT`` or 33083; 0 picks a free one.
        home: folder of the store, log, server file and tokens; default
            ``$TAKLER_HOME`` or ``~/.takler``.
        certfile, keyfile: serve TLS with this certificate.
        fresh: ignore the stored state and start over.
        restore: start from this checkpoint file instead of the store.
        store: keep a durable store (off only for benchmarks and tests).
        runners: runner name -> runner (default: local, slurm, command).
        wall_clock: the flow clock at Trio time 0 of this run (tests).
        listeners: serve on these instead of binding host:port (tests).
        max_message_size: the largest request accepted, in bytes, and the
            largest child command body.
        max_operator_message_size: the largest request accepted on a
            connection that gave an operator token when it connected (a
            ``load`` of a 100,000-task flow is about 9 MB).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        home: str | Path | None = None,
        *,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        fresh: bool = False,
        restore: str | Path | None = None,
        log_level: str = "INFO",
        console: bool = True,
        store: bool = True,
        runners: dict[str, Any] | None = None,
        wall_clock: dt.datetime | None = None,
        listeners: list[trio.abc.Listener[Any]] | None = None,
        job_cafile: str | Path | None = None,
        max_message_size: int = 1 << 20,
        max_operator_message_size: int = 64 << 20,
    ) -> None:
        self.host = host or os.environ.get("TAKLER_HOST") or "127.0.0.1"
        env_port = os.environ.get("TAKLER_PORT")
        self.port = port if port is not None else int(env_port) if env_port else DEFAULT_PORT
        self.home = Path(home) if home is not None else default_home()
        self.certfile = Path(certfile) if certfile else None
        self.keyfile = Path(keyfile) if keyfile else None
        self.job_cafile = Path(job_cafile) if job_cafile else self.certfile
        self.fresh = fresh
        self.restore = Path(restore) if restore else None
        self.log_level = log_level
        self.console = console
        self.use_store = store
        self.max_message_size = max_message_size
        self.max_operator_message_size = max_operator_message_size
        self.bunch = Bunch()
        self.state = ServerState.running
        self.read_only_reason: str | None = None
        self.zombies: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.log_file = self.home / "takler.log"
        self._log_handlers: list[logging.Handler] = []
        self._runners = runners
        self._wall0 = wall_clock
        self._trio0 = 0.0
        self._given_listeners = listeners
        self._listeners: list[trio.abc.Listener[Any]] = []
        self._pending_flows: list[tuple[Flow, bool]] = []
        self._started = False
        self._cancel_scope: trio.CancelScope | None = None
        self._changed: trio.Event | None = None
        self._store_lock: trio.Lock | None = None
        # Group commit: batches prepared but not yet durable, oldest first, and
        # how many batches were ever prepared and written.
        self._queued: list[Any] = []
        self._prepared = 0
        self._written = 0
        #: set when the write in progress ends (None while none is)
        self._writing: trio.Event | None = None
        self._history: list[Any] = []
        self._guest: Any = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self.store: Any = None
        self.hub: Any = None
        self.auth: Any = None
        self.service: Any = None
        self.scheduler: Scheduler | None = None
        self.jobs: Jobs | None = None
        self.token: str | None = None
        self.exit_status = 0
        self._until_complete = False

    # ---------------------------------------------------------------- clock

    def now(self) -> dt.datetime:
        """The flow clock: wall time at start, advanced by Trio's clock."""
        if self._wall0 is None:
            return dt.datetime.now().replace(microsecond=0)
        return self._wall0 + dt.timedelta(seconds=trio.current_time() - self._trio0)

    # ---------------------------------------------------------------- flows

    def add_flows(self, flows: Iterable[Flow], begin: bool = False) -> None:
        """Add flows; one already restored from the store keeps its stored state.

        Before :meth:`start` the flows wait until the store is restored; after
        it, the scheduler's next step commits them.
        """
        for flow in flows:
            if self._started:
                self._add_flow_now(flow, begin)
            else:
                self._pending_flows.append((flow, begin))
        if self._started and self.scheduler is not None:
            self.scheduler.poke()

    def _add_flow_now(self, flow: Flow, begin: bool) -> None:
        existing = self.bunch.flows.get(flow.name)
        if existing is not None and existing is not flow:
            from takler.codec import dump_node

            if dump_node(existing, state=False) != dump_node(flow, state=False):
                log.warning(
                    "flow %s: its definition differs from the stored flow's; keeping the stored"
                    " flow and its state (`takler replace` loads the new definition, --fresh"
                    " starts over)",
                    flow.name,
                )
            else:
                log.info("flow %s: keeping the stored state (use --fresh to start over)", flow.name)
            return
        if existing is None and self.read_only_reason is not None:
            log.error("flow %s not added: the store cannot be written", flow.name)
            return
        if existing is None:
            self.bunch.add_flow(flow)
        self.bunch.now = self.now()
        if begin and not flow.begun:
            ops.begin(flow)

    # ---------------------------------------------------------------- commit

    async def commit(self) -> None:
        """Make every change in the journal (and the job history noted since)
        durable, then tell the scheduler, subscribers and waiting child
        commands. Returns once durable.

        Raises:
            StoreError: the store could not write; the server turns read-only
                and the changes stay queued for the next write that succeeds.
        """
        changes = self.bunch.drain()
        history, self._history = self._history, []
        # With nothing new, batches that a cancelled writer left queued are still
        # written; those of a failing store wait for check_writable().
        if not changes and not history and (not self._queued or self.read_only_reason):
            return
        if self.scheduler is not None and changes:
            self.scheduler.notice(changes)
        try:
            if self.store is not None:
                await self._persist(changes, history)
        finally:
            # Published even when the store failed: they are in the model, which
            # `show` reports, and the read-only flag says they are not durable.
            if self.hub is not None and changes:
                self.hub.publish(changes, self.state.value)
            if self._changed is not None:
                self._changed.set()
                self._changed = trio.Event()
        if self._until_complete:
            self._check_until_complete()

    def note_history(
        self, action: str, path: str, tryno: int, rid: str | None = None, **fields: Any
    ) -> None:
        """Queue a job-history write (:class:`~takler.server.store.HistoryOp`)
        for the next commit, which writes it in the same transaction."""
        from takler.server.store import HistoryOp

        if self.store is not None:
            if action == "add":
                fields["rid"] = rid
                rid = None
            self._history.append(HistoryOp(action, path, tryno, fields, rid))

    async def _persist(self, changes: list[Change], history: list[Any]) -> None:
        # Group commit: whoever holds the lock writes every batch queued so far,
        # ours included; a failed write leaves them queued for the next writer.
        # While a write is in progress, the others wait for its end on one
        # event (woken together) rather than queueing on the lock, where each
        # would wake the next in turn only to find its batch already written.
        self._queued.append(self.store.prepare(self.bunch, changes, history=history))
        self._prepared += 1
        mine = self._prepared
        assert self._store_lock is not None
        while self._written < mine:
            writing = self._writing
            if writing is not None:
                await writing.wait()
                continue
            async with self._store_lock:
                if self._written < mine:
                    await self._write_queued()

    async def _write_queued(self) -> None:
        batches, self._queued = self._queued, []
        self._writing = writing = trio.Event()
        try:
            await run_sync(self.store.write, batches)
        except BaseException as e:
            self._queued[:0] = batches
            if isinstance(e, TaklerError):
                self._store_failed(e)
            raise
        else:
            self._written += len(batches)
        finally:
            self._writing = None
            writing.set()
        if self.read_only_reason is not None:
            self._store_recovered()

    def _store_failed(self, error: TaklerError) -> None:
        if self.read_only_reason is None:  # the first cause is the one to tell
            log.error("store: %s; refusing changes until it can be written", error)
            self.read_only_reason = str(error)

    def _store_recovered(self) -> None:
        log.info("store: writable again; accepting changes")
        self.read_only_reason = None
        if self.scheduler is not None:
            self.scheduler.rescan()

    async def check_writable(self) -> None:
        """Refuse (StateError, code ``read_only_store``) while the store cannot
        be written; a store that failed is tried again first."""
        if self.read_only_reason is None or self.store is None or self.store.read_only:
            refuse_if_read_only(self)
            return
        assert self._store_lock is not None
        async with self._store_lock:
            if self.read_only_reason is not None:
                try:
                    if self._queued:
                        await self._write_queued()
                    else:
                        probe = self.now().isoformat()
                        await trio.to_thread.run_sync(self.store.put_kv, "server.probe", probe)
                        self._store_recovered()
                except TaklerError:
                    pass  # still failing: refused below
        refuse_if_read_only(self)

    async def store_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking store call in a worker thread, one at a time.

        Job history noted for the next commit is written first, and so is
        every batch a commit has queued behind a write under way, so a read
        sees every job's end (:class:`~takler.server.jobs.Jobs` lets an end
        record wait for a commit to carry it)."""
        if self._history or self._queued:
            await self.commit()
        assert self._store_lock is not None
        async with self._store_lock:
            return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def wait_changed(self) -> None:
        assert self._changed is not None
        await self._changed.wait()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind the port and restore state; returns once clients can connect.

        Under asyncio, starts Trio in guest mode on the running loop.
        """
        import sniffio

        if sniffio.current_async_library() == "asyncio":
            await self._start_guest()
            return
        await self._start_trio()

    async def run(self, until_complete: bool = False) -> int:
        """Serve until stopped (SIGINT, SIGTERM, ``takler stop``).

        With ``until_complete``, also stop when every flow is complete (returns
        0) or stuck with aborted tasks (returns 1).
        """
        import sniffio

        self._until_complete = until_complete
        if sniffio.current_async_library() == "asyncio":
            return await self._run_guest()
        if not self._started:
            await self._start_trio()
        return await self._run_trio()

    async def _start_trio(self) -> None:
        from takler.server.setup import open_parts

        self._trio0 = trio.current_time()
        if self._wall0 is None:
            # Not rounded: a restarted server's clock must not run behind the last one's.
            self._wall0 = dt.datetime.now()
        self._changed = trio.Event()
        self._store_lock = trio.Lock()
        await open_parts(self)
        self._started = True
        for flow, begin in self._pending_flows:
            self._add_flow_now(flow, begin)
        self._pending_flows.clear()
        try:
            await self.commit()
        except TaklerError:
            pass  # a store that cannot write: the server serves read-only (logged, flagged)

    async def _run_trio(self) -> int:
        from takler.server.setup import close_parts

        assert self.scheduler is not None and self.jobs is not None
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._watch_signals)
                await nursery.start(self.jobs.run)
                for runner in {id(r): r for r in self.jobs.runners.values()}.values():
                    await nursery.start(runner.run)
                self._adopt_running()
                await nursery.start(self.scheduler.run)
                self.scheduler.rescan()
                nursery.start_soon(self._serve)
                if self._until_complete:
                    self._check_until_complete()
        finally:
            with trio.CancelScope(shield=True):
                await close_parts(self)
        return self.exit_status

    async def aclose(self) -> None:
        """Release what :meth:`start` opened, for a server that will not :meth:`run`."""
        from takler.server.setup import close_parts

        if self._started:
            self._started = False
            with trio.CancelScope(shield=True):
                await close_parts(self)

    async def _serve(self) -> None:
        await self.service.serve(self._listeners)
        # Every connection has ended: nothing is left to wait for.
        self.stop_now()

    def _adopt_running(self) -> None:
        assert self.jobs is not None
        for task in self.bunch.live_tasks():
            if task.status in RUNNING:
                self.jobs.adopt(task)

    async def _watch_signals(self) -> None:
        try:
            receiver = trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        except RuntimeError:  # not the main thread: signals are the host's business
            return
        with receiver as signals:
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                self.stop()
                return

    def stop(self) -> None:
        """Stop serving: refuse new connections, finish requests, then exit.

        Running jobs keep running; they report to the next server.
        """
        if self._cancel_scope is None:
            return
        if self.service is not None:
            self.service.stop()
        self._cancel_scope.deadline = min(
            self._cancel_scope.deadline, trio.current_time() + SHUTDOWN_GRACE
        )

    def stop_now(self) -> None:
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _check_until_complete(self) -> None:
        flows = list(self.bunch.flows.values())
        if not flows or self._cancel_scope is None:
            return
        states = [f.state for f in flows]
        if all(s is NodeStatus.complete for s in states):
            self.exit_status = 0
            self.stop()
            return
        stuck = self._stuck()
        if stuck:
            log.warning("stuck: %s", ", ".join(stuck[:5]))
            self.exit_status = 1
            self.stop()

    def _stuck(self) -> list[str]:
        """Aborted tasks with nothing else running or submittable."""
        aborted = []
        for task in self.bunch.tasks():
            if task.status in RUNNING:
                return []
            if task.status is NodeStatus.aborted:
                aborted.append(task.node_path)
        if not aborted or self.scheduler is None:
            return []
        if self.scheduler._candidates or self.scheduler.next_deadline() is not None:
            return []
        return aborted

    # ---------------------------------------------------------------- server states

    def set_state(self, state: ServerState) -> list[Change]:
        old = self.state
        if old is state:
            return []
        self.state = state
        change = Change("/", ChangeKind.server, "state", old.value, state.value)
        self.bunch._record([change])
        if state is ServerState.running and self.scheduler is not None:
            self.scheduler.rescan()
        return [change]

    def may_submit(self) -> bool:
        return self.state is ServerState.running and self.read_only_reason is None

    def submit_job(self, task: Task) -> None:
        assert self.jobs is not None
        self.jobs.start(task)

    # ---------------------------------------------------------------- asyncio guest mode

    async def _start_guest(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        done: asyncio.Future[int] = loop.create_future()

        async def trio_main() -> int:
            try:
                await self._start_trio()
            except BaseException as e:
                loop.call_soon_threadsafe(_set_exc, started, e)
                raise
            loop.call_soon_threadsafe(_set_result, started, None)
            return await self._run_trio()

        def on_done(outcome: Any) -> None:
            try:
                result = outcome.unwrap()
            except BaseException as e:  # delivered to whoever awaits run()
                _set_exc(started, e)
                _set_exc(done, e)
                return
            _set_result(done, result)

        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=on_done,
            host_uses_signal_set_wakeup_fd=True,
        )
        self._guest = done
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._guest_signal, signum)
            except (NotImplementedError, RuntimeError):
                pass
        await started

    def _guest_signal(self, signum: int) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        token = self._trio_token
        if token is not None:
            token.run_sync_soon(self.stop)

    async def _run_guest(self) -> int:
        if self._guest is None:
            await self._start_guest()
        return int(await self._guest)


def _set_result(fut: Any, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exc(fut: Any, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def refuse_if_read_only(server: TaklerServer) -> None:
    if server.read_only_reason is not None:
        err = StateError(f"the store cannot be written ({server.read_only_reason}): changes are refused")
        err.code = "read_only_store"
        raise err
