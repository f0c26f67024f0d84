"""Jobs: rendering a task's script, submitting it, watching it to the end.

Each submitted job gets one watcher task with its own cancel scope. The
submission (new try number and password) is durable before the job starts,
so a crash can never make a try run twice; the job's handle is journaled as
soon as the runner returns it, so a restarted server can adopt the job.
"""

from __future__ import annotations

import collections
import logging
import re
import secrets
import shlex
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from takler.core import ops
from takler.core.change import Change, ChangeKind
from takler.core.errors import TaklerError
from takler.core.node import Task
from takler.core.params import variables_for_job
from takler.core.status import RUNNING, NodeStatus
from takler.runners.base import JobExit, JobHandle, JobSpec, Runner
from takler.tasks.render import write_job

log = logging.getLogger("takler.jobs")

#: ends a job cannot tell itself, only the runner can
_UNTOLD = frozenset({"timeout", "node_fail", "cancelled", "killed"})
#: longest a kill waits for a submission in progress to give the job's id (s)
_SUBMIT_WAIT = 60.0
#: ecFlow's default ECF_JOB_CMD: run the job in the background, as the local runner does
_BACKGROUND_JOB_CMD = re.compile(
    r"\s*%(?:ECF|TAKLER)_JOB%\s*1?>\s*%(?:ECF|TAKLER)_JOBOUT%\s*2>&1\s*&?\s*"
)
#: seconds a job's end record may wait for another commit to carry it
FLUSH_DELAY = 0.05


def new_password() -> str:
    return secrets.token_urlsafe(12)


def handle_to_data(handle: JobHandle) -> dict[str, Any]:
    return {
        "runner": handle.runner,
        "rid": handle.rid,
        "started": handle.started,
        "extra": dict(handle.extra),
    }


def handle_from_data(data: Mapping[str, Any]) -> JobHandle:
    return JobHandle(
        runner=str(data["runner"]),
        rid=str(data["rid"]),
        started=data.get("started"),
        extra={str(k): str(v) for k, v in (data.get("extra") or {}).items()},
    )


def render_task(task: Task, variables: Mapping[str, str], bin_dir: Path) -> tuple[str, Path, Path]:
    """Render the task's script into job text. Returns (text, job file, job output).

    The job finds takler's ``ecflow_client`` first: ``bin_dir`` leads its PATH
    and a shell function of that name wins even over a head that puts a real
    ecFlow's bin folder first (the user's own PATH is never changed).

    Raises:
        TaklerError: a missing script, an undefined variable, a bad include.
    """
    from takler.runners.slurm import slurm_directives
    from takler.tasks.render import render_job

    script = Path(variables.get("TAKLER_SCRIPT", ""))
    job_out = Path(variables["TAKLER_JOBOUT"])
    directives: list[str] = []
    if variables.get("TAKLER_RUNNER", "local") == "slurm":
        directives = slurm_directives(variables, path=task.node_path, job_out=job_out)
    shim = _shim_lines(bin_dir)
    ecf = _ecf_script(task, variables, script)
    if ecf is not None:
        from takler.ecflow.preprocess import preprocess_ecf
        from takler.ecflow.variables import ecflow_aliases

        variables = {**variables, **ecflow_aliases(variables)}
        includes = [Path(p) for p in variables.get("ECF_INCLUDE", "").split(":") if p]
        home = variables.get("ECF_HOME") or variables.get("TAKLER_HOME")
        text = preprocess_ecf(ecf, variables, includes, Path(home) if home else None)
        text = _insert_header(text, directives, shim)
    else:
        includes = [Path(p) for p in variables.get("TAKLER_INCLUDE", "").split(":") if p]
        text = render_job(script, variables, includes, [*directives, *shim])
    return text, Path(variables["TAKLER_JOB"]), job_out


def _shim_lines(bin_dir: Path) -> list[str]:
    client = shlex.quote(str(bin_dir / "ecflow_client"))
    return [
        f'export PATH="{bin_dir}:$PATH"',
        f'ecflow_client() {{ {client} "$@"; }}',
        '[ -z "${BASH_VERSION:-}" ] || export -f ecflow_client',
    ]


def _ecf_script(task: Task, variables: Mapping[str, str], script: Path) -> Path | None:
    extension = variables.get("ECF_EXTN") or ".ecf"
    if script.suffix in (".ecf", extension):
        return script
    if script.exists() or not any(k.startswith("ECF_") for k in variables):
        return None
    from takler.ecflow.preprocess import find_ecf_script

    return find_ecf_script(task.node_path, variables)


def _insert_header(text: str, directives: list[str], shim: list[str]) -> str:
    # Batch directives follow the shebang; the shim goes after the script's own
    # leading comments, where its #SBATCH/#PBS lines are, or the batch system
    # would stop reading them at the shim's first command.
    lines = text.split("\n")
    at = 1 if lines and lines[0].startswith("#!") else 0
    end = at
    while end < len(lines) and (not lines[end].strip() or lines[end].lstrip().startswith("#")):
        end += 1
    return "\n".join(lines[:at] + directives + lines[at:end] + shim + lines[end:])


@attrs.define
class JobWatch:
    """A running job as the server sees it."""

    task_path: str
    tryno: int
    #: the submission's password: try numbers restart when a repeat requeues
    password: str | None
    handle: JobHandle | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    killing: bool = False
    #: set once the submission is over (a handle, or none after a failure)
    submitted: trio.Event = attrs.Factory(trio.Event)


class Jobs:
    """Starts and watches every job of the server.

    Args:
        runners: runner name -> runner.
        commit: the server's commit (durable, then published).
        bin_dir: folder put first on jobs' PATH (takler's ``ecflow_client``).
        on_history: notes a job-history event (``submit``, ``submit_failed``,
            ``end``) for the next commit.
    """

    def __init__(
        self,
        runners: Mapping[str, Runner],
        commit: Callable[[], Awaitable[None]],
        bin_dir: Path,
        on_history: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.runners = runners
        self._commit = commit
        self._bin_dir = bin_dir
        self._on_history = on_history or _no_history
        self.watches: dict[str, JobWatch] = {}
        #: task path -> watchers alive (the current job's and stale ones still running)
        self._live: collections.Counter[str] = collections.Counter()
        self._nursery: trio.Nursery | None = None
        self._flushing = False
        #: flows told that the local runner does not run their job command
        self._told_job_cmd: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def start(self, task: Task) -> None:
        """Start the job of a task whose submission is committed.

        While the server stops, the job is not started: the next server finds
        the task submitted with no job and retries it.
        """
        if self._nursery is None:
            log.info("%s: not started, the server is stopping", task.node_path)
            return
        watch = JobWatch(task.node_path, task.tryno, task.password)
        old = self.watches.get(task.node_path)
        if old is not None and old.handle is None:
            old.scope.cancel()  # a stale try not submitted yet: never start it
        # A stale job already running keeps its watcher: it reaps the process
        # and records its end, and changes nothing, being no longer current.
        self.watches[task.node_path] = watch
        self._live[task.node_path] += 1
        try:
            self._nursery.start_soon(self._lifecycle, task, watch)
        except RuntimeError:  # closed: the server stops and run() has not returned yet
            self._forget(watch)
            self._gone(watch)
            log.info("%s: not started, the server is stopping", task.node_path)

    def adopt(self, task: Task) -> None:
        """Watch again a job started by an earlier server (restart)."""
        if self._nursery is None:
            return
        watch = JobWatch(task.node_path, task.tryno, task.password)
        watch.submitted.set()  # by the earlier server, or never
        if task.job is not None:
            watch.handle = handle_from_data(task.job)
        self.watches[task.node_path] = watch
        self._live[task.node_path] += 1
        self._nursery.start_soon(self._adopted, task, watch)

    async def kill(self, task: Task) -> bool:
        """Kill the task's current job. Returns False when none is known.

        A job still being submitted (its ``init`` may arrive before the
        runner returns its id) is killed once the submission is over.
        """
        watch = self.watches.get(task.node_path)
        if watch is not None and watch.handle is None:
            with trio.move_on_after(_SUBMIT_WAIT):
                await watch.submitted.wait()
        if watch is None or watch.handle is None:
            return False
        watch.killing = True
        runner = self.runners[watch.handle.runner]
        await runner.kill(watch.handle)
        return True

    def _current(self, task: Task, watch: JobWatch) -> bool:
        return (
            self.watches.get(watch.task_path) is watch
            and task.password == watch.password
            and task.status in RUNNING
        )

    async def _lifecycle(self, task: Task, watch: JobWatch) -> None:
        try:
            with watch.scope:
                try:
                    handle = await self._submit(task, watch)
                except TaklerError as e:
                    if self._current(task, watch):
                        log.warning("%s: submission failed: %s", task.node_path, e)
                        self._on_history("submit_failed", {"path": task.node_path, "tryno": watch.tryno,
                                           "exit": "submit_failed", "reason": str(e)})  # fmt: skip
                        _abort(task, f"submission failed: {e}")
                        await self._save()
                    self._forget(watch)
                    return
                finally:
                    watch.submitted.set()
                await self._watch(task, watch, handle)
        finally:
            self._gone(watch)

    async def _submit(self, task: Task, watch: JobWatch) -> JobHandle:
        variables = variables_for_job(task)
        runner_name = variables.get("TAKLER_RUNNER", "local")
        runner = self.runners.get(runner_name)
        if runner is None:
            from takler.runners.base import SubmitError

            raise SubmitError(f"unknown runner {runner_name!r} (TAKLER_RUNNER)")
        if runner_name == "local":
            self._tell_unused_job_cmd(task, variables)
        text, job_file, job_out = render_task(task, variables, self._bin_dir)
        # Written here, not in a worker thread: the script and its includes were
        # just read here too, and a thread hop per job (wake-ups and the GIL
        # handed back and forth while jobs start on every core) cost the server
        # 7-24% of its CPU in W-wide-1000-limit20 (paired runs). A failure is a
        # JobRenderError, which aborts the task like any submission failure.
        # Rewritten in place unless an earlier job of the task may still read it.
        write_job(text, job_file, in_place=self._live[task.node_path] == 1)
        if any(name.startswith("ECF_") for name in variables):
            from takler.ecflow.variables import ecflow_aliases

            # An ECF_JOB_CMD names %ECF_JOB%, %ECF_JOBOUT%...: give the runner them.
            variables = ecflow_aliases(variables)
        spec = JobSpec(task.node_path, job_file, job_out, watch.tryno, variables)
        handle = await runner.submit(spec)
        watch.handle = handle
        # Journaled before any await, so no commit can make the job's init
        # durable without its handle.
        if self._current(task, watch):
            ops.record_job(task, handle.rid, handle_to_data(handle))
        self._on_history("submit", {"path": task.node_path, "tryno": watch.tryno,
                                    "runner": handle.runner, "rid": handle.rid})  # fmt: skip
        await self._save()
        log.info("%s: submitted try %d (%s %s)", task.node_path, watch.tryno, handle.runner, handle.rid)
        return handle

    def _tell_unused_job_cmd(self, task: Task, variables: Mapping[str, str]) -> None:
        """Warn, once a flow, that a job command (a .def's ECF_JOB_CMD: ssh,
        qsub, a site wrapper...) is not run by the local runner, unless it is
        ecFlow's default, which does what the local runner does."""
        command = variables.get("TAKLER_JOB_CMD") or variables.get("ECF_JOB_CMD")
        if not command or _BACKGROUND_JOB_CMD.fullmatch(command):
            return
        flow = task.node_path.split("/", 2)[1]
        if flow in self._told_job_cmd:
            return
        self._told_job_cmd.add(flow)
        log.warning(
            "%s: job command %r not run: the local runner starts jobs itself;"
            " set TAKLER_RUNNER to 'command' to submit with it (docs/ecflow.md)",
            task.node_path, command[:200],
        )  # fmt: skip

    async def _adopted(self, task: Task, watch: JobWatch) -> None:
        try:
            with watch.scope:
                if watch.handle is None:
                    if self._current(task, watch):
                        reason = "the server stopped before the job was started"
                        log.warning("%s: try %d aborted: %s", task.node_path, watch.tryno, reason)
                        _abort(task, reason)
                        await self._save()
                    self._forget(watch)
                    return
                log.info("%s: re-adopting job %s (%s)", task.node_path, watch.handle.rid, watch.handle.runner)
                await self._watch(task, watch, watch.handle)
        finally:
            self._gone(watch)

    async def _watch(self, task: Task, watch: JobWatch, handle: JobHandle) -> None:
        runner = self.runners.get(handle.runner)
        if runner is None:
            exit = JobExit("lost", None, None, f"no runner {handle.runner!r} to watch the job")
        else:
            exit = await runner.wait(handle)
        self._on_history("end", {"path": task.node_path, "tryno": watch.tryno, "rid": handle.rid,
                           "exit": exit.status, "code": exit.code, "reason": exit.reason})  # fmt: skip
        changed = True
        if self._current(task, watch):
            reason = exit.reason
            if exit.status == "exited" and exit.code is not None:
                reason = f"job exited without reporting complete (code {exit.code})"
            elif exit.status == "exited":
                reason = f"job ended without reporting complete ({exit.reason})"
            elif watch.killing and exit.status != "killed":
                # Runners word their own "killed" reasons; others ended under our kill.
                reason = f"killed by takler ({exit.reason})"
            log.warning("%s: try %d aborted: %s", task.node_path, watch.tryno, reason)
            _abort(task, reason)
        elif self._aborted_itself(task, watch, exit):
            # A job stopped by a time limit or a cancel aborts on the signal
            # before the batch system says why: put that first.
            reason = f"{exit.reason}; the job said: {task.reason}"
            log.warning("%s: try %d: %s", task.node_path, watch.tryno, exit.reason)
            task.reason = reason
            # The wire form of a reason update: the live view reads it from a
            # submission change; the store writes the task's row again.
            task._commit([Change(task.node_path, ChangeKind.submission, "reason", None,
                                 {"reason": reason})])  # fmt: skip
        else:
            changed = False
        # Gone before the commit tells everyone that the job ended.
        self._forget(watch)
        if changed:
            await self._save()
        else:
            # Only the history record changed, which nobody waits for: the
            # next commit (the job's complete was just committed, others
            # follow) writes it with its own, or a flush shortly after.
            self._flush_soon()

    def _aborted_itself(self, task: Task, watch: JobWatch, exit: JobExit) -> bool:
        """This try's job aborted the task, and the runner knows an end it could not name."""
        return (
            exit.status in _UNTOLD
            and self.watches.get(watch.task_path) is watch
            and task.status is NodeStatus.aborted
            and task.password == watch.password
            and task.tryno == watch.tryno
            and bool(task.reason)
            and exit.reason not in (task.reason or "")
        )

    async def _save(self) -> None:
        """Commit; a store that fails keeps the changes queued (the server is
        read-only until it can write them), which is no reason to drop the job."""
        try:
            await self._commit()
        except TaklerError as e:
            log.error("not yet durable: %s", e)

    def _flush_soon(self) -> None:
        """Commit within ``FLUSH_DELAY`` s what is noted but not yet written."""
        if self._flushing or self._nursery is None:
            return
        self._flushing = True
        try:
            self._nursery.start_soon(self._flush)
        except RuntimeError:  # closed: the server's last commit writes it
            self._flushing = False

    async def _flush(self) -> None:
        try:
            await trio.sleep(FLUSH_DELAY)
        finally:
            self._flushing = False
        await self._save()  # nothing to do when another commit took it already

    def _forget(self, watch: JobWatch) -> None:
        if self.watches.get(watch.task_path) is watch:
            del self.watches[watch.task_path]

    def _gone(self, watch: JobWatch) -> None:
        """The watcher of ``watch`` ended: its job no longer runs (or never started)."""
        left = self._live[watch.task_path] - 1
        if left > 0:
            self._live[watch.task_path] = left
        else:
            del self._live[watch.task_path]


def _abort(task: Task, reason: str) -> None:
    from takler.server.scheduler import hidden_statuses, note_hidden_statuses

    hidden = hidden_statuses(task)
    ops.abort(task, reason)
    note_hidden_statuses(hidden)


def _no_history(event: str, data: dict[str, Any]) -> None:
    return None
