"""What every runner takes, returns and promises.

A runner starts, watches and kills jobs. It knows nothing of flows: the server
hands it a :class:`JobSpec` and gets back a :class:`JobHandle` it can store and,
after a restart, pass to :meth:`Runner.wait` of a fresh runner (adoption).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import attrs
import trio

from takler.core.errors import TaklerError


def _copy_map(value: Mapping[str, str]) -> Mapping[str, str]:
    # A private copy, left out of the hash: a dict does not hash.
    return dict(value)


@attrs.frozen
class JobSpec:
    """One job to submit.

    Attributes:
        path: the task's path, for messages and job names.
        job_file: the rendered bash job script, already written.
        job_out: where the job's stdout and stderr go.
        tryno: the try number of this submission.
        variables: all the task's variables (``TAKLER_SLURM_PARTITION``...).
    """

    path: str
    job_file: Path
    job_out: Path
    tryno: int
    variables: Mapping[str, str] = attrs.field(factory=dict, converter=_copy_map, hash=False)


@attrs.frozen
class JobHandle:
    """What identifies a submitted job, JSON-able so the server can store it.

    Attributes:
        runner: the runner's name: ``"local"``, ``"slurm"`` or ``"command"``.
        rid: the pid, the Slurm job id, or the id the command runner parsed.
        started: local jobs only: when the process started, in clock ticks
            since boot (read just before the spawn), which tells the job from
            a later process with the same pid.
        extra: strings a runner needs to adopt or kill the job later.
    """

    runner: str
    rid: str
    started: float | None = None
    extra: Mapping[str, str] = attrs.field(factory=dict, converter=_copy_map, hash=False)


@attrs.frozen
class JobExit:
    """How a job ended.

    Attributes:
        status: ``"exited"`` (code 0), ``"failed"`` (non-zero code),
            ``"signalled"``, ``"killed"`` (by :meth:`Runner.kill`),
            ``"timeout"``, ``"lost"`` (gone, exit unknown), ``"node_fail"``
            or ``"cancelled"`` (by someone else than takler).
        code: the exit code, when known.
        signal: the signal that ended the job, when known.
        reason: one readable line.
    """

    status: str
    code: int | None
    signal: int | None
    reason: str


class RunnerError(TaklerError, RuntimeError):
    """A runner could not do what it was asked."""

    code = "runner_failed"


class SubmitError(RunnerError):
    """A job could not be submitted; the message is the underlying one."""

    code = "submit_failed"


class KillError(RunnerError):
    """A job could not be killed (it is not known to have ended)."""

    code = "kill_failed"


class Runner(Protocol):
    """How the server drives a kind of job."""

    name: str

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the runner's background work until cancelled; start it before waits."""
        ...

    async def submit(self, spec: JobSpec) -> JobHandle:
        """Start the job.

        Raises:
            SubmitError: the job did not start; the message says why.
        """
        ...

    async def wait(self, handle: JobHandle) -> JobExit:
        """Block until the job ends, also for handles from an earlier server.

        Cancellable at any time; cancelling stops the watching, not the job.
        """
        ...

    async def kill(self, handle: JobHandle, grace: float = 5.0) -> None:
        """Stop the job; a job already gone is not an error.

        Raises:
            KillError: the batch system refused or could not be reached.
        """
        ...


def signal_name(signum: int) -> str:
    """``9`` → ``"SIGKILL"``; unknown numbers → ``"signal 99"``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_from_code(code: int) -> JobExit:
    """Map a process's return code (negative: killed by that signal)."""
    if code == 0:
        return JobExit("exited", 0, None, "job exited with code 0")
    if code > 0:
        return JobExit("failed", code, None, f"job exited with code {code}")
    return JobExit("signalled", None, -code, f"killed by signal {-code} ({signal_name(-code)})")
