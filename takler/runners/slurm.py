"""The Slurm runner: ``sbatch`` submits, one ``squeue`` poll loop watches, ``scancel`` kills.

Options come from the task's variables (see :data:`OPTION_VARIABLES` and
``TAKLER_SLURM_OPTIONS``). They are passed on the ``sbatch`` command line and
are also available as ``#SBATCH`` lines from :func:`slurm_directives` for the
job file itself, so a job script read on its own says how it was submitted.

Watching costs one ``squeue`` call per poll for all watched jobs. A job gone
from ``squeue``, or shown in a final state, has ended; its exit code comes from
one ``sacct`` call for all such jobs when accounting works, else from
``scontrol show job`` per job (Slurm keeps finished jobs there for
``MinJobAge`` seconds). A poll comes every ``poll_interval`` seconds, or every
``min(poll_interval, 1 s)`` while a watched job is less than 5 s old, so a new
job's first check comes within about a second.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from takler.runners.base import (
    JobExit,
    JobHandle,
    JobSpec,
    KillError,
    SubmitError,
    signal_name,
)

log = logging.getLogger(__name__)

#: variable → sbatch option; empty or missing variables add nothing.
OPTION_VARIABLES: Mapping[str, str] = {
    "TAKLER_SLURM_PARTITION": "--partition",
    "TAKLER_SLURM_TIME": "--time",
    "TAKLER_SLURM_NODES": "--nodes",
    "TAKLER_SLURM_NTASKS": "--ntasks",
    "TAKLER_SLURM_MEM": "--mem",
    "TAKLER_SLURM_ACCOUNT": "--account",
}

# A command's return code, stdout and stderr.
CommandResult = tuple[int, str, str]
RunCommand = Callable[[Sequence[str]], Awaitable[CommandResult]]

COMMAND_TIMEOUT = 60.0
_YOUNG = 5.0
_FAST_POLL = 1.0

# States after which a job never runs again; anything else is still going.
_FINAL_STATES = frozenset(
    {
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED",
        "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT",
    }
)  # fmt: skip
_INVALID_JOB = "Invalid job id"


async def run_command(args: Sequence[str]) -> CommandResult:
    """Run a Slurm command; a missing or hung command is a result, not an exception."""
    try:
        with trio.fail_after(COMMAND_TIMEOUT):
            proc = await trio.run_process(
                list(args),
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    except FileNotFoundError:
        return 127, "", f"{args[0]}: command not found"
    except trio.TooSlowError:
        return 124, "", f"{args[0]}: no answer within {COMMAND_TIMEOUT:g} s"
    return (
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def job_name(path: str) -> str:
    """``/flow/family/task`` → ``flow.family.task``."""
    return path.strip("/").replace("/", ".") or "takler"


def _option_groups(variables: Mapping[str, str]) -> list[list[str]]:
    groups: list[list[str]] = []
    for variable, option in OPTION_VARIABLES.items():
        value = variables.get(variable, "").strip()
        if "\n" in value:
            raise SubmitError(f"{variable} holds a line break: {value!r}")
        if value:
            groups.append([f"{option}={value}"])
    try:
        words = shlex.split(variables.get("TAKLER_SLURM_OPTIONS", ""))
    except ValueError as exc:
        raise SubmitError(f"TAKLER_SLURM_OPTIONS: {exc}") from exc
    for word in words:
        # "--qos normal" stays one group, so a #SBATCH line keeps option and value
        if word.startswith("-") or not groups:
            groups.append([word])
        else:
            groups[-1].append(word)
    return groups


def slurm_directives(
    variables: Mapping[str, str], *, path: str | None = None, job_out: Path | str | None = None
) -> list[str]:
    """The ``#SBATCH`` lines for a job file, to insert after its shebang.

    Args:
        variables: the task's variables.
        path: the task path, which names the job; no name line without it.
        job_out: where stdout and stderr go; no output lines without it.

    Raises:
        SubmitError: a variable holds an unusable value.
    """
    lines = []
    if path is not None:
        lines.append(f"#SBATCH --job-name={job_name(path)}")
    if job_out is not None:
        lines += [f"#SBATCH --output={job_out}", f"#SBATCH --error={job_out}"]
    lines += ["#SBATCH " + shlex.join(group) for group in _option_groups(variables)]
    return lines


def sbatch_options(spec: JobSpec) -> list[str]:
    """The sbatch command-line options for ``spec`` (the same as its directives)."""
    options = [
        f"--job-name={job_name(spec.path)}",
        f"--output={spec.job_out}",
        f"--error={spec.job_out}",
    ]
    return options + [word for group in _option_groups(spec.variables) for word in group]


def _first_line(text: str, prefer: str = "error") -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if prefer in line), lines[0] if lines else "")


def _split_exit_code(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return None, None


def job_exit(state: str, exit_code: str = "", *, killed: bool = False) -> JobExit:
    """Map a final Slurm state and ``ExitCode`` (``"3:0"``) to a :class:`JobExit`."""
    state = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
    code, sig = _split_exit_code(exit_code)
    if state == "CANCELLED" and killed:
        return JobExit("killed", None, sig or None, "killed by takler (scancel)")
    if state == "COMPLETED":
        return JobExit("exited", 0, None, "slurm: COMPLETED, exit code 0")
    if state == "FAILED":
        if sig:
            return JobExit(
                "signalled",
                code,
                sig,
                f"slurm: FAILED, killed by signal {sig} ({signal_name(sig)})",
            )
        if code is None:
            return JobExit("failed", None, None, "slurm: FAILED, exit code unknown")
        return JobExit("failed", code, None, f"slurm: FAILED, exit code {code}")
    if state in ("CANCELLED", "PREEMPTED", "REVOKED"):
        return JobExit("cancelled", None, sig or None, f"slurm: {state}")
    if state == "TIMEOUT":
        return JobExit("timeout", None, sig or None, "slurm: TIMEOUT (time limit reached)")
    if state == "DEADLINE":
        return JobExit("timeout", None, None, "slurm: DEADLINE (deadline reached)")
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        return JobExit("node_fail", None, None, f"slurm: {state} (node failure)")
    if state == "OUT_OF_MEMORY":
        return JobExit("failed", code, None, "slurm: OUT_OF_MEMORY (out of memory)")
    return JobExit("failed", code, sig or None, f"slurm: {state}")


@attrs.define(eq=False)
class _Watch:
    since: float
    done: trio.Event = attrs.Factory(trio.Event)
    result: JobExit | None = None
    waiters: int = 0


class SlurmRunner:
    """Submits with sbatch and watches all jobs with one poll loop; see the module docstring.

    Attributes:
        polls: how many squeue calls the poll loop has made.
        poll_seconds: time spent in squeue, sacct and scontrol calls.
    """

    name = "slurm"

    def __init__(self, poll_interval: float = 5.0, *, run: RunCommand = run_command) -> None:
        self.poll_interval = poll_interval
        self.polls = 0
        self.poll_seconds = 0.0
        self._run = run
        self._watched: dict[str, _Watch] = {}
        self._killed: set[str] = set()
        self._sacct_works: bool | None = None
        self._next_poll = math.inf
        self._wake = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The poll loop; :meth:`wait` returns only while it runs. Returns only when cancelled."""
        task_status.started()
        while True:
            await self._sleep_until_due()
            await self._poll()
            now = trio.current_time()
            young = any(now - w.since < _YOUNG for w in self._watched.values())
            delay = min(self.poll_interval, _FAST_POLL) if young else self.poll_interval
            self._next_poll = now + delay if self._watched else math.inf

    async def submit(self, spec: JobSpec) -> JobHandle:
        """``sbatch --parsable <options> <job_file>``.

        Raises:
            SubmitError: with sbatch's error line.
        """
        args = ["sbatch", "--parsable", *sbatch_options(spec), str(spec.job_file)]
        try:
            await trio.Path(spec.job_out).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SubmitError(f"{spec.path}: cannot create {spec.job_out.parent}: {exc}") from exc
        code, out, err = await self._run(args)
        if code != 0:
            raise SubmitError(_first_line(err) or _first_line(out) or f"sbatch exited with {code}")
        rid = out.strip().split(";")[0]
        if not rid.isdigit():
            raise SubmitError(f"sbatch printed no job id: {_first_line(out)!r}")
        return JobHandle(self.name, rid)

    async def wait(self, handle: JobHandle) -> JobExit:
        """Block until Slurm reports the job's end; any job id works (adoption).

        Cancellable at any time; the job goes on.
        """
        rid = handle.rid
        watch = self._watched.get(rid)
        if watch is None:
            watch = self._watched[rid] = _Watch(trio.current_time())
            first = min(self.poll_interval, _FAST_POLL)
            self._next_poll = min(self._next_poll, trio.current_time() + first)
            self._wake.set()
        watch.waiters += 1
        try:
            await watch.done.wait()
        finally:
            watch.waiters -= 1
            if watch.waiters == 0 and self._watched.get(rid) is watch:
                del self._watched[rid]
        assert watch.result is not None
        return watch.result

    async def kill(self, handle: JobHandle, grace: float = 5.0) -> None:
        """``scancel`` the job; Slurm's ``KillWait``, not ``grace``, spaces SIGTERM and SIGKILL.

        Shielded from cancellation and bounded in time.

        Raises:
            KillError: with scancel's error line.
        """
        self._killed.add(handle.rid)
        with trio.CancelScope(shield=True):
            code, _, err = await self._run(["scancel", handle.rid])
        if code != 0 and _INVALID_JOB not in err and "already completing" not in err:
            self._killed.discard(handle.rid)
            raise KillError(_first_line(err) or f"scancel exited with {code}")

    async def _sleep_until_due(self) -> None:
        while not (self._watched and trio.current_time() >= self._next_poll):
            self._wake = trio.Event()
            with trio.move_on_at(self._next_poll if self._watched else math.inf):
                await self._wake.wait()

    async def _timed(self, args: Sequence[str]) -> CommandResult:
        start = trio.current_time()
        try:
            return await self._run(args)
        finally:
            self.poll_seconds += trio.current_time() - start

    async def _poll(self) -> None:
        ids = list(self._watched)
        self.polls += 1
        code, out, err = await self._timed(
            ["squeue", "--noheader", "--states=all", "--format=%i|%T|%r", "--jobs=" + ",".join(ids)]
        )
        if code != 0 and _INVALID_JOB not in err:
            log.warning("squeue failed, will retry: %s", _first_line(err) or f"exit code {code}")
            return
        states = {}
        for line in out.splitlines():
            rid, _, rest = line.strip().partition("|")
            states[rid] = rest.partition("|")[0]
        ended: dict[str, JobExit] = {}
        need_exit_code = []
        for rid in ids:
            state = states.get(rid)
            if state is None or state == "FAILED":
                need_exit_code.append(rid)
            elif state in _FINAL_STATES:
                ended[rid] = job_exit(state, killed=rid in self._killed)
        if need_exit_code:
            ended.update(await self._final_states(need_exit_code))
        for rid, result in ended.items():
            self._killed.discard(rid)
            watch = self._watched.pop(rid, None)
            if watch is not None:
                watch.result = result
                watch.done.set()

    async def _final_states(self, ids: list[str]) -> dict[str, JobExit]:
        found: dict[str, JobExit] = {}
        if self._sacct_works is not False:
            code, out, err = await self._timed(
                ["sacct", "-n", "-P", "-X", "-j", ",".join(ids),
                 "--format=JobID,State,ExitCode,Reason"]
            )  # fmt: skip
            if code != 0:
                log.info("sacct unusable, using scontrol: %s", _first_line(err))
                self._sacct_works = False
            else:
                self._sacct_works = True
                for line in out.splitlines():
                    rid, state, exit_code, *_ = [*line.split("|"), "", "", ""]
                    if rid in ids and state.split(" ")[0] in _FINAL_STATES:
                        found[rid] = job_exit(state, exit_code, killed=rid in self._killed)
        for rid in ids:
            if rid not in found:
                result = await self._scontrol_state(rid)
                if result is not None:
                    found[rid] = result
        return found

    async def _scontrol_state(self, rid: str) -> JobExit | None:
        code, out, err = await self._timed(["scontrol", "show", "job", "-o", rid])
        if code != 0:
            if _INVALID_JOB in err:
                return JobExit("lost", None, None, f"slurm job {rid} no longer exists")
            log.warning("scontrol failed for job %s, will retry: %s", rid, _first_line(err))
            return None
        fields = dict(re.findall(r"(\w+)=(\S*)", out))
        state = fields.get("JobState", "")
        if state not in _FINAL_STATES:
            return None  # squeue missed it for a moment; look again next poll
        return job_exit(state, fields.get("ExitCode", ""), killed=rid in self._killed)
