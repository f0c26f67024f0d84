"""The local runner: each job is a ``bash`` process in its own session.

A job's process group is its own (``start_new_session``), so the job outlives
the server and a kill reaches the whole group. A handle carries the pid and
when the process started (the boot clock, read just before the spawn), which
lets a later server adopt the job and, against ``/proc``, tell it from an
unrelated process that reused the pid.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import time
from pathlib import Path

import trio

from takler.runners.base import JobExit, JobHandle, JobSpec, SubmitError, exit_from_code

_FALLBACK_POLL = 1.0
_OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
#: clock ticks a second, the unit of a start time in ``/proc/PID/stat``
_TICKS = os.sysconf("SC_CLK_TCK")
#: how far a process's start may lie after the clock read before its spawn:
#: the spawn itself, and a busy machine's delay. A pid is not used again
#: within a second: it would take every other pid to be used first.
_START_SLACK = _TICKS


def boot_ticks() -> float:
    """Now, in clock ticks since boot: the clock of a process's start time.

    Read just before a spawn, it dates the process without reading
    ``/proc/PID/stat`` of a process that is still starting (which waits on
    the new process while it maps its program).
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if gone.

    Field 22 of ``/proc/PID/stat``; the command name (field 2) may hold spaces
    and parentheses, so fields are counted from its closing parenthesis.
    """
    try:
        # os.open/os.read: no file object to build, once per job started.
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _open_output(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # already gone: nothing to kill


class LocalRunner:
    """Runs jobs as local processes; see the module docstring."""

    name = "local"

    def __init__(self) -> None:
        # pid -> pidfd of the jobs this runner started. Plain pids rather than
        # subprocess objects: a job outlives the server by design, and an
        # abandoned Popen would warn that its process is still running.
        self._children: dict[int, int] = {}
        # pid -> set once wait() has reaped the child, for kill() to wait on
        self._ended: dict[int, trio.Event] = {}
        # Jobs get the server's environment as it was when the runner was made,
        # as bytes: posix_spawn would otherwise re-encode it for every job.
        self._env = dict(os.environb)
        # pid -> name of the last signal kill() sent, so wait() can say "killed"
        self._killed: dict[int, str] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing runs in the background; returns only when cancelled."""
        task_status.started()
        await trio.sleep_forever()

    async def submit(self, spec: JobSpec) -> JobHandle:
        """Start ``bash job_file`` with output to ``job_out`` (truncated).

        Raises:
            SubmitError: the job file is missing or the process did not start.
        """
        if not spec.job_file.is_file():
            raise SubmitError(f"{spec.path}: job file {spec.job_file} does not exist")
        started = boot_ticks()
        try:
            pid = self._spawn(spec)
        except OSError:
            # Rare: say why (a missing output folder is made, then tried again).
            try:
                out = await trio.to_thread.run_sync(_open_output, spec.job_out)
            except OSError as exc:
                raise SubmitError(
                    f"{spec.path}: cannot open job output {spec.job_out}: {exc}"
                ) from exc
            os.close(out)
            started = boot_ticks()
            try:
                pid = self._spawn(spec)
            except OSError as exc:
                raise SubmitError(f"{spec.path}: cannot start bash: {exc}") from exc
        self._children[pid] = os.pidfd_open(pid)
        self._ended[pid] = trio.Event()
        return JobHandle(self.name, str(pid), started)

    def _spawn(self, spec: JobSpec) -> int:
        # posix_spawn returns once the child has exec'd (vfork-fast) and holds
        # the GIL meanwhile, so a worker thread would not let the loop go on.
        # The job's own process opens its output (a file action, as a shell
        # does for `job > out`): creating a file is the job's work, and costs
        # the kernel more than the spawn. A failed file action is an OSError.
        return os.posix_spawnp(
            "bash",
            ["bash", str(spec.job_file)],
            self._env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(spec.job_out), _OUT_FLAGS, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )

    async def wait(self, handle: JobHandle) -> JobExit:
        """Block until the job's process ends; cancellable at any time.

        A process of an earlier server has no exit status for us: its end is
        reported as ``lost``, as is a pid that is gone or now names another
        process.
        """
        pid = int(handle.rid)
        pidfd = self._children.get(pid)
        if pidfd is not None:
            try:
                code = await _reap(pidfd)
            finally:
                del self._children[pid]
                self._ended.pop(pid, trio.Event()).set()
            killed_by = self._killed.pop(pid, None)
            if killed_by is not None:
                return JobExit(
                    "killed",
                    code if code >= 0 else None,
                    -code if code < 0 else None,
                    f"killed by takler ({killed_by})",
                )
            return exit_from_code(code)
        if not self._same_process(handle):
            return JobExit("lost", None, None, f"job process {pid} no longer exists")
        await self._wait_gone(handle)
        killed_by = self._killed.pop(pid, None)
        if killed_by is not None:
            return JobExit("killed", None, None, f"killed by takler ({killed_by})")
        return JobExit("lost", None, None, f"job process {pid} ended while the server was away")

    async def kill(self, handle: JobHandle, grace: float = 5.0) -> None:
        """SIGTERM the job's process group, SIGKILL it if alive after ``grace`` s.

        Shielded from cancellation and bounded by ``grace``. A job already gone
        is not an error.
        """
        pid = int(handle.rid)
        with trio.CancelScope(shield=True):
            if pid not in self._children and not self._same_process(handle):
                return  # ended before the kill
            self._killed[pid] = "SIGTERM"
            _signal_group(pid, signal.SIGTERM)
            with trio.move_on_after(grace):
                await self._wait_gone(handle)
                return
            self._killed[pid] = "SIGKILL"
            _signal_group(pid, signal.SIGKILL)

    def _same_process(self, handle: JobHandle) -> bool:
        started = process_start_time(int(handle.rid))
        if started is None:
            return False
        if handle.started is None:
            return True
        # The clock read before the spawn (or, from an older server, the
        # start time itself): the process started in the same tick or soon after.
        earliest = math.floor(handle.started)
        return earliest <= started <= earliest + _START_SLACK

    async def _wait_gone(self, handle: JobHandle) -> None:
        pid = int(handle.rid)
        ended = self._ended.get(pid)
        if ended is not None:
            await ended.wait()
            return
        pidfd_open = getattr(os, "pidfd_open", None)
        pidfd = None
        try:
            if pidfd_open is not None:
                pidfd = pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
        if pidfd is None:
            # No pidfd on this system: the one place we poll.
            while True:
                if not self._same_process(handle):
                    return
                await trio.sleep(_FALLBACK_POLL)
        try:
            # The pid may have been reused between our check and pidfd_open.
            if self._same_process(handle):
                await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)


async def _reap(pidfd: int) -> int:
    """Wait for our child behind ``pidfd`` to end, reap it, close the fd.

    Returns its return code the subprocess way: negative for a signal.
    """
    try:
        await trio.lowlevel.wait_readable(pidfd)
        # The pidfd is readable: the child has ended, so waitid returns at once.
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)  # noqa: ASYNC222
    finally:
        os.close(pidfd)
    if info is None:
        return 0
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status
