"""The command runner: site commands from the task's variables submit, watch and kill.

For PBS, LSF or a site's own wrappers, in the manner of ecFlow's
``ECF_JOB_CMD``. The variables:

- ``TAKLER_JOB_CMD`` (required): submits, e.g. ``qsub -o {TAKLER_JOBOUT} {TAKLER_JOB}``.
- ``TAKLER_JOB_ID_REGEX``: finds the job id in the submit command's stdout;
  group 1 (or the whole match) is the id. Default ``(\\S+)``: the first word.
- ``TAKLER_KILL_CMD``: kills, e.g. ``qdel {TAKLER_RID}``.
- ``TAKLER_STATUS_CMD``: tells whether the job is still there, e.g.
  ``qstat {TAKLER_RID}``; run every ``poll_interval`` seconds per job.

Templates take ``{NAME}`` fields (Python ``str.format``; ``{{`` for a literal
brace) or, ecFlow-style, ``%NAME%`` (``%%`` for a literal ``%``); a template
with any ``%NAME%`` in it is read the ecFlow way only, so shell braces stay as
they are. Besides the task's variables there are ``TAKLER_JOB`` (the job file),
``TAKLER_JOBOUT``, ``TAKLER_NAME`` (the task path), ``TAKLER_TRYNO`` and, in
the kill and status commands, ``TAKLER_RID``. Values are not quoted. Commands
run with ``bash -c``. Kill and status commands are expanded at submission and
kept in the handle, so a later server can still use them.

The status command's contract: exit code 0 means the job is still in the
batch system, unless its stdout starts with a final word: ``COMPLETED`` (or
``DONE``), ``FAILED``, ``CANCELLED``, ``TIMEOUT`` or ``NODE_FAIL``, optionally
followed by the exit code (``FAILED 3``). A non-zero exit code means the job
has left the batch system with its outcome unknown: ``exited`` with no code;
the task's own child commands decide its fate. Without a status command,
:meth:`CommandRunner.wait` returns only when cancelled.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping

import trio

from takler.runners.base import JobExit, JobHandle, JobSpec, KillError, SubmitError

DEFAULT_ID_REGEX = r"(\S+)"
COMMAND_TIMEOUT = 60.0

_ECFLOW_FIELD = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)?%")
_FINAL_WORDS = {
    "COMPLETED": "exited",
    "DONE": "exited",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TIMEOUT": "timeout",
    "NODE_FAIL": "node_fail",
}


def expand(template: str, variables: Mapping[str, str]) -> str:
    """Fill a command template; see the module docstring for the two syntaxes.

    Raises:
        KeyError: a field names no variable (its name is the key).
        ValueError: the template is malformed.
    """
    if _ECFLOW_FIELD.search(template):

        def field(match: re.Match[str]) -> str:
            name = match.group(1)
            return "%" if name is None else variables[name]

        return _ECFLOW_FIELD.sub(field, template)
    return template.format_map(variables)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


async def _bash(command: str, limit: float) -> tuple[int, str, str]:
    try:
        with trio.fail_after(limit):
            proc = await trio.run_process(
                ["bash", "-c", command],
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    except trio.TooSlowError:
        return 124, "", f"no answer within {limit:g} s"
    return (
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


class CommandRunner:
    """Runs site commands from the task's variables; see the module docstring."""

    name = "command"

    def __init__(
        self, poll_interval: float = 5.0, command_timeout: float = COMMAND_TIMEOUT
    ) -> None:
        self.poll_interval = poll_interval
        self.command_timeout = command_timeout
        self._killed: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing runs in the background (each wait polls); returns only when cancelled."""
        task_status.started()
        await trio.sleep_forever()

    async def submit(self, spec: JobSpec) -> JobHandle:
        """Run ``TAKLER_JOB_CMD`` and read the job id from its stdout.

        Raises:
            SubmitError: a template is missing or malformed, the command failed
                (with its error line), or no id was found.
        """
        variables = {
            **spec.variables,
            "TAKLER_JOB": str(spec.job_file),
            "TAKLER_JOBOUT": str(spec.job_out),
            "TAKLER_NAME": spec.path,
            "TAKLER_TRYNO": str(spec.tryno),
        }
        template = variables.get("TAKLER_JOB_CMD", "").strip()
        if not template:
            raise SubmitError(f"{spec.path}: TAKLER_JOB_CMD is not set for the command runner")
        command = self._expand("TAKLER_JOB_CMD", template, variables, spec.path)
        try:
            pattern = re.compile(variables.get("TAKLER_JOB_ID_REGEX") or DEFAULT_ID_REGEX, re.M)
        except re.error as exc:
            raise SubmitError(f"{spec.path}: bad TAKLER_JOB_ID_REGEX: {exc}") from exc
        try:
            await trio.Path(spec.job_out).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SubmitError(f"{spec.path}: cannot create {spec.job_out.parent}: {exc}") from exc

        code, out, err = await _bash(command, self.command_timeout)
        if code != 0:
            detail = _first_line(err) or _first_line(out) or f"exit code {code}"
            raise SubmitError(f"{spec.path}: {command!r} failed: {detail}")
        match = pattern.search(out)
        if match is None:
            raise SubmitError(
                f"{spec.path}: no job id in the output of {command!r}: {_first_line(out)!r}"
            )
        rid = match.group(1) if pattern.groups else match.group(0)

        extra = {}
        for variable, key in (("TAKLER_KILL_CMD", "kill_cmd"), ("TAKLER_STATUS_CMD", "status_cmd")):
            template = variables.get(variable, "").strip()
            if template:
                extra[key] = self._expand(
                    variable, template, {**variables, "TAKLER_RID": rid}, spec.path
                )
        return JobHandle(self.name, rid, extra=extra)

    async def wait(self, handle: JobHandle) -> JobExit:
        """Poll the status command until it says the job has ended.

        Without a status command this returns only when cancelled. Cancellable
        at any time.
        """
        command = handle.extra.get("status_cmd")
        if not command:
            await trio.sleep_forever()
        while True:
            await trio.sleep(self.poll_interval)
            code, out, _ = await _bash(command, self.command_timeout)
            result = self._status(handle.rid, code, out)
            if result is not None:
                self._killed.discard(handle.rid)
                return result

    async def kill(self, handle: JobHandle, grace: float = 5.0) -> None:
        """Run the kill command (the batch system decides the grace period).

        Shielded from cancellation and bounded by the command timeout. When the
        kill command fails but the status command says the job has ended, the
        job was already gone: not an error.

        Raises:
            KillError: no kill command, or it failed (with its error line).
        """
        command = handle.extra.get("kill_cmd")
        if not command:
            raise KillError(f"job {handle.rid}: no TAKLER_KILL_CMD to kill it with")
        self._killed.add(handle.rid)
        with trio.CancelScope(shield=True):
            code, out, err = await _bash(command, self.command_timeout)
            if code == 0:
                return
            status = handle.extra.get("status_cmd")
            if status and self._status(
                handle.rid, *(await _bash(status, self.command_timeout))[:2]
            ):
                return
        self._killed.discard(handle.rid)
        detail = _first_line(err) or _first_line(out) or f"exit code {code}"
        raise KillError(f"job {handle.rid}: {command!r} failed: {detail}")

    def _status(self, rid: str, code: int, out: str) -> JobExit | None:
        killed = rid in self._killed
        if code != 0:
            if killed:
                return JobExit("killed", None, None, "killed by takler (TAKLER_KILL_CMD)")
            return JobExit("exited", None, None, "job left the batch system")
        words = out.split()
        status = _FINAL_WORDS.get(words[0].upper()) if words else None
        if status is None:
            return None
        exit_code = int(words[1]) if len(words) > 1 and words[1].lstrip("-").isdigit() else None
        if status == "cancelled" and killed:
            return JobExit("killed", exit_code, None, "killed by takler (TAKLER_KILL_CMD)")
        if status == "exited":
            exit_code = 0 if exit_code is None else exit_code
            status = "exited" if exit_code == 0 else "failed"
        reason = f"{words[0].upper()}" + ("" if exit_code is None else f", exit code {exit_code}")
        return JobExit(status, exit_code, None, f"batch system: {reason}")

    @staticmethod
    def _expand(variable: str, template: str, variables: Mapping[str, str], path: str) -> str:
        try:
            return expand(template, variables)
        except KeyError as exc:
            raise SubmitError(
                f"{path}: {variable} uses {exc.args[0]!r}, which is not a variable"
            ) from exc
        except (ValueError, IndexError) as exc:
            raise SubmitError(f"{path}: bad {variable} template {template!r}: {exc}") from exc
