"""How jobs are started, watched and killed: local processes, Slurm, site commands.

Runners know nothing of flows. The server keeps one :class:`RunnerSet`, picks
a runner with a task's ``TAKLER_RUNNER`` variable (default ``local``) and the
runner of a stored :class:`JobHandle` with its ``runner`` field.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import trio

from takler.core.errors import InvalidValueError
from takler.runners.base import (
    JobExit,
    JobHandle,
    JobSpec,
    KillError,
    Runner,
    RunnerError,
    SubmitError,
)
from takler.runners.command import CommandRunner
from takler.runners.local import LocalRunner
from takler.runners.slurm import SlurmRunner, slurm_directives

__all__ = [
    "CommandRunner",
    "JobExit",
    "JobHandle",
    "JobSpec",
    "KillError",
    "LocalRunner",
    "Runner",
    "RunnerError",
    "RunnerSet",
    "SlurmRunner",
    "SubmitError",
    "slurm_directives",
]

DEFAULT_RUNNER = "local"


class RunnerSet:
    """One runner of each kind, chosen by name."""

    def __init__(self, runners: Mapping[str, Runner], default: str = DEFAULT_RUNNER) -> None:
        self.runners = dict(runners)
        self.default = default

    @classmethod
    def standard(cls, env: Mapping[str, str] | None = None) -> RunnerSet:
        """The local, slurm and command runners.

        Args:
            env: where ``TAKLER_SLURM_POLL`` and ``TAKLER_COMMAND_POLL`` (poll
                intervals in seconds, default 5) are read; ``os.environ`` if None.

        Raises:
            InvalidValueError: a poll interval is not a positive number.
        """
        env = os.environ if env is None else env
        return cls(
            {
                "local": LocalRunner(),
                "slurm": SlurmRunner(_interval(env, "TAKLER_SLURM_POLL")),
                "command": CommandRunner(_interval(env, "TAKLER_COMMAND_POLL")),
            }
        )

    def get(self, name: str) -> Runner:
        """The runner called ``name`` (as in ``JobHandle.runner``).

        Raises:
            SubmitError: no runner has that name.
        """
        try:
            return self.runners[name]
        except KeyError:
            known = ", ".join(sorted(self.runners))
            raise SubmitError(f"unknown runner {name!r} (known: {known})") from None

    def for_variables(self, variables: Mapping[str, str]) -> Runner:
        """The runner a task's ``TAKLER_RUNNER`` names, the default if unset or empty.

        Raises:
            SubmitError: no runner has that name.
        """
        return self.get(variables.get("TAKLER_RUNNER", "").strip() or self.default)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every runner's background loop; started once all are; returns only when cancelled."""
        async with trio.open_nursery() as nursery:
            for runner in self.runners.values():
                await nursery.start(runner.run)
            task_status.started()


def _interval(env: Mapping[str, str], name: str) -> float:
    text = env.get(name, "").strip()
    if not text:
        return 5.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise InvalidValueError(f"{name} must be a positive number of seconds, not {text!r}")
    return value
