"""Choosing a runner by name, and running all of them in one nursery."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from takler.core.errors import InvalidValueError
from takler.runners import (
    CommandRunner,
    JobHandle,
    LocalRunner,
    RunnerSet,
    SlurmRunner,
    SubmitError,
)


def test_runner_is_chosen_by_takler_runner() -> None:
    runners = RunnerSet.standard(env={})
    assert isinstance(runners.for_variables({}), LocalRunner)
    assert isinstance(runners.for_variables({"TAKLER_RUNNER": " "}), LocalRunner)
    assert isinstance(runners.for_variables({"TAKLER_RUNNER": "slurm"}), SlurmRunner)
    assert isinstance(runners.for_variables({"TAKLER_RUNNER": "command"}), CommandRunner)
    assert runners.get("slurm") is runners.for_variables({"TAKLER_RUNNER": "slurm"})


def test_unknown_runner_is_a_submit_error() -> None:
    with pytest.raises(SubmitError, match=r"unknown runner 'pbs' \(known: command, local, slurm\)"):
        RunnerSet.standard(env={}).for_variables({"TAKLER_RUNNER": "pbs"})


def test_poll_intervals_come_from_the_environment() -> None:
    runners = RunnerSet.standard(env={"TAKLER_SLURM_POLL": "0.5", "TAKLER_COMMAND_POLL": "30"})
    slurm = runners.get("slurm")
    command = runners.get("command")
    assert isinstance(slurm, SlurmRunner) and slurm.poll_interval == 0.5
    assert isinstance(command, CommandRunner) and command.poll_interval == 30.0
    default = RunnerSet.standard(env={}).get("slurm")
    assert isinstance(default, SlurmRunner) and default.poll_interval == 5.0


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_bad_poll_interval(value: str) -> None:
    with pytest.raises(InvalidValueError, match="TAKLER_SLURM_POLL"):
        RunnerSet.standard(env={"TAKLER_SLURM_POLL": value})


async def test_run_starts_every_runner(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[list[str]] = []

    async def fake_slurm(args: Sequence[str]) -> tuple[int, str, str]:
        calls.append(list(args))
        return 0, "", ""

    slurm = SlurmRunner(poll_interval=1.0, run=fake_slurm)
    runners = RunnerSet({"local": LocalRunner(), "slurm": slurm})
    async with trio.open_nursery() as nursery:
        await nursery.start(runners.run)
        with trio.move_on_after(5):
            await slurm.wait(JobHandle("slurm", "1"))
        nursery.cancel_scope.cancel()
    # the fake answers nothing useful, so the job stays watched: polls ran
    assert calls and calls[0][0] == "squeue"
