"""The Slurm runner: its logic against a fake Slurm, then against a real one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from takler.runners.base import JobExit, JobHandle, JobSpec, KillError, SubmitError
from takler.runners.slurm import SlurmRunner, job_exit, sbatch_options, slurm_directives


def make_spec(tmp_path: Path, body: str, name: str = "t1", **variables: str) -> JobSpec:
    job_file = tmp_path / f"{name}.job1"
    job_file.write_text("#!/bin/bash\n" + body + "\n")
    return JobSpec(
        path=f"/flow/fam/{name}",
        job_file=job_file,
        job_out=tmp_path / "out" / f"{name}.1",
        tryno=1,
        variables=variables,
    )


@asynccontextmanager
async def open_runner(runner: SlurmRunner) -> AsyncIterator[SlurmRunner]:
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        yield runner
        nursery.cancel_scope.cancel()


async def wait_all(runner: SlurmRunner, handles: Sequence[JobHandle]) -> list[JobExit]:
    results: list[JobExit | None] = [None] * len(handles)

    async def one(i: int) -> None:
        results[i] = await runner.wait(handles[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(handles)):
            nursery.start_soon(one, i)
    return [r for r in results if r is not None]


# ---------------------------------------------------------------- options


def test_directives_and_sbatch_options_agree(tmp_path: Path) -> None:
    variables = {
        "TAKLER_SLURM_PARTITION": "debug",
        "TAKLER_SLURM_TIME": "00:05:00",
        "TAKLER_SLURM_MEM": "",
        "TAKLER_SLURM_NTASKS": "4",
        "TAKLER_SLURM_OPTIONS": "--qos normal --comment='two words' --exclusive",
    }
    spec = make_spec(tmp_path, "true", **variables)
    out = spec.job_out
    assert slurm_directives(variables, path=spec.path, job_out=out) == [
        "#SBATCH --job-name=flow.fam.t1",
        f"#SBATCH --output={out}",
        f"#SBATCH --error={out}",
        "#SBATCH --partition=debug",
        "#SBATCH --time=00:05:00",
        "#SBATCH --ntasks=4",
        "#SBATCH --qos normal",
        "#SBATCH '--comment=two words'",
        "#SBATCH --exclusive",
    ]
    assert sbatch_options(spec) == [
        "--job-name=flow.fam.t1",
        f"--output={out}",
        f"--error={out}",
        "--partition=debug",
        "--time=00:05:00",
        "--ntasks=4",
        "--qos",
        "normal",
        "--comment=two words",
        "--exclusive",
    ]
    assert slurm_directives({}) == []


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"TAKLER_SLURM_OPTIONS": "--comment='open"}, "TAKLER_SLURM_OPTIONS"),
        ({"TAKLER_SLURM_ACCOUNT": "a\nb"}, "line break"),
    ],
)
def test_bad_option_values_are_submit_errors(variables: dict[str, str], message: str) -> None:
    with pytest.raises(SubmitError, match=message):
        slurm_directives(variables)


@pytest.mark.parametrize(
    ("state", "code", "killed", "expected"),
    [
        ("COMPLETED", "0:0", False, JobExit("exited", 0, None, "slurm: COMPLETED, exit code 0")),
        ("FAILED", "3:0", False, JobExit("failed", 3, None, "slurm: FAILED, exit code 3")),
        (
            "FAILED",
            "0:9",
            False,
            JobExit("signalled", 0, 9, "slurm: FAILED, killed by signal 9 (SIGKILL)"),
        ),
        ("CANCELLED by 0", "0:15", False, JobExit("cancelled", None, 15, "slurm: CANCELLED")),
        ("CANCELLED", "0:15", True, JobExit("killed", None, 15, "killed by takler (scancel)")),
        (
            "TIMEOUT",
            "0:15",
            False,
            JobExit("timeout", None, 15, "slurm: TIMEOUT (time limit reached)"),
        ),
        (
            "NODE_FAIL",
            "",
            False,
            JobExit("node_fail", None, None, "slurm: NODE_FAIL (node failure)"),
        ),
        (
            "OUT_OF_MEMORY",
            "0:125",
            False,
            JobExit("failed", 0, None, "slurm: OUT_OF_MEMORY (out of memory)"),
        ),
        ("COMPLETED", "0:0", True, JobExit("exited", 0, None, "slurm: COMPLETED, exit code 0")),
    ],
)
def test_final_states(state: str, code: str, killed: bool, expected: JobExit) -> None:
    assert job_exit(state, code, killed=killed) == expected


# ---------------------------------------------------------------- fake Slurm


class FakeSlurm:
    """Answers sbatch, squeue, sacct, scontrol and scancel from dicts."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.call_times: list[float] = []
        self.queue: dict[str, str] = {}  # what squeue shows: id -> state
        self.final: dict[str, tuple[str, str]] = {}  # what scontrol/sacct know: state, exit code
        self.sacct = False
        self.down = False
        self.next_id = 100

    def cmd_calls(self, name: str) -> list[list[str]]:
        return [c for c in self.calls if c[0] == name]

    async def __call__(self, args: Sequence[str]) -> tuple[int, str, str]:
        self.calls.append(list(args))
        self.call_times.append(trio.current_time())
        cmd = args[0]
        if self.down:
            return 1, "", f"{cmd}: error: Unable to contact slurm controller\n"
        if cmd == "sbatch":
            if any(a == "--partition=nosuch" for a in args):
                return 1, "", "sbatch: error: invalid partition specified: nosuch\n"
            self.next_id += 1
            self.queue[str(self.next_id)] = "PENDING"
            return 0, f"{self.next_id};cluster\n", ""
        if cmd == "squeue":
            ids = args[-1].removeprefix("--jobs=").split(",")
            return 0, "".join(f"{i}|{self.queue[i]}|None\n" for i in ids if i in self.queue), ""
        if cmd == "sacct":
            if not self.sacct:
                return 1, "", "Slurm accounting storage is disabled\n"
            ids = args[args.index("-j") + 1].split(",")
            rows = (
                f"{i}|{self.final[i][0]}|{self.final[i][1]}|None\n" for i in ids if i in self.final
            )
            return 0, "".join(rows), ""
        if cmd == "scontrol":
            rid = args[-1]
            if rid not in self.final:
                return 1, "", "slurm_load_jobs error: Invalid job id specified\n"
            state, code = self.final[rid]
            return (
                0,
                f"JobId={rid} JobName=x JobState={state} Reason=None ExitCode={code} X=y\n",
                "",
            )
        if cmd == "scancel":
            if args[-1] in self.queue:
                self.queue[args[-1]] = "CANCELLED"
            return 0, "", ""
        raise AssertionError(f"unexpected command {args}")

    def finish(self, rid: str, state: str, code: str, *, leave_queue: bool = True) -> None:
        self.final[rid] = (state, code)
        if leave_queue:
            self.queue.pop(rid, None)
        else:
            self.queue[rid] = state


async def test_submit_passes_options_and_parses_the_id(tmp_path: Path) -> None:
    fake = FakeSlurm()
    spec = make_spec(tmp_path, "true", TAKLER_SLURM_PARTITION="debug")
    handle = await SlurmRunner(run=fake).submit(spec)
    assert handle == JobHandle("slurm", "101")
    assert fake.calls == [["sbatch", "--parsable", *sbatch_options(spec), str(spec.job_file)]]
    assert spec.job_out.parent.is_dir()


async def test_submit_failure_carries_sbatchs_error_line(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "true", TAKLER_SLURM_PARTITION="nosuch")
    with pytest.raises(SubmitError, match=r"^sbatch: error: invalid partition specified: nosuch$"):
        await SlurmRunner(run=FakeSlurm()).submit(spec)


async def test_one_squeue_per_poll_for_all_jobs(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSlurm()
    fake.queue = {"1": "RUNNING", "2": "RUNNING", "3": "PENDING", "4": "RUNNING"}
    runner = SlurmRunner(poll_interval=10.0, run=fake)
    handles = [JobHandle("slurm", rid) for rid in ("1", "2", "3", "4", "5")]
    async with open_runner(runner):
        async with trio.open_nursery() as nursery:
            results: dict[str, JobExit] = {}

            async def watch(handle: JobHandle) -> None:
                results[handle.rid] = await runner.wait(handle)

            for handle in handles:
                nursery.start_soon(watch, handle)
            await trio.sleep(30)
            assert list(results) == ["5"]  # unknown to Slurm: lost at the first poll
            fake.finish("1", "COMPLETED", "0:0", leave_queue=False)
            fake.finish("2", "FAILED", "3:0")
            fake.finish("3", "TIMEOUT", "0:15", leave_queue=False)
            fake.finish("4", "NODE_FAIL", "0:0")
    assert results == {
        "1": JobExit("exited", 0, None, "slurm: COMPLETED, exit code 0"),
        "2": JobExit("failed", 3, None, "slurm: FAILED, exit code 3"),
        "3": JobExit("timeout", None, None, "slurm: TIMEOUT (time limit reached)"),
        "4": JobExit("node_fail", None, None, "slurm: NODE_FAIL (node failure)"),
        "5": JobExit("lost", None, None, "slurm job 5 no longer exists"),
    }
    squeues = fake.cmd_calls("squeue")
    assert sorted(squeues[0][-1].removeprefix("--jobs=").split(",")) == ["1", "2", "3", "4", "5"]
    assert sorted(squeues[-1][-1].removeprefix("--jobs=").split(",")) == ["1", "2", "3", "4"]
    assert runner.polls == len(squeues)
    # young jobs are polled each second for 5 s, then every 10 s
    assert 6 <= len(squeues) <= 10
    # sacct is tried once, then scontrol alone answers
    assert len(fake.cmd_calls("sacct")) == 1
    assert sorted(c[-1] for c in fake.cmd_calls("scontrol")) == ["2", "4", "5"]


async def test_sacct_answers_for_all_ended_jobs_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeSlurm()
    fake.sacct = True
    fake.queue = {"7": "RUNNING", "8": "RUNNING"}
    fake.final = {"7": ("FAILED", "2:0"), "8": ("CANCELLED by 0", "0:15")}
    runner = SlurmRunner(poll_interval=5.0, run=fake)
    async with open_runner(runner):
        fake.queue.clear()
        results = await wait_all(runner, [JobHandle("slurm", "7"), JobHandle("slurm", "8")])
    assert results == [
        JobExit("failed", 2, None, "slurm: FAILED, exit code 2"),
        JobExit("cancelled", None, 15, "slurm: CANCELLED"),
    ]
    assert [c[0] for c in fake.calls] == ["squeue", "sacct"]


async def test_first_poll_of_a_new_job_comes_within_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeSlurm()
    fake.queue = {"1": "RUNNING", "2": "RUNNING"}
    runner = SlurmRunner(poll_interval=60.0, run=fake)
    async with open_runner(runner), trio.open_nursery() as nursery:
        nursery.start_soon(runner.wait, JobHandle("slurm", "1"))
        await trio.sleep(100)  # job 1 is old now: polls are 60 s apart
        before = len(fake.calls)
        registered = trio.current_time()
        nursery.start_soon(runner.wait, JobHandle("slurm", "2"))
        await trio.sleep(1.5)
        assert len(fake.calls) == before + 1
        assert fake.call_times[-1] - registered <= 1.0
        assert fake.calls[-1][-1] == "--jobs=1,2"
        nursery.cancel_scope.cancel()


async def test_no_poll_without_watched_jobs(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSlurm()
    fake.queue = {"1": "RUNNING"}
    runner = SlurmRunner(poll_interval=1.0, run=fake)
    async with open_runner(runner):
        with trio.move_on_after(3):
            await runner.wait(JobHandle("slurm", "1"))
        calls = len(fake.calls)
        assert calls >= 2
        await trio.sleep(100)
        assert len(fake.calls) == calls


async def test_kill_is_reported_as_killed(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSlurm()
    fake.queue = {"9": "RUNNING"}
    runner = SlurmRunner(poll_interval=1.0, run=fake)
    handle = JobHandle("slurm", "9")
    async with open_runner(runner), trio.open_nursery() as nursery:
        results: list[JobExit] = []

        async def watch() -> None:
            results.append(await runner.wait(handle))

        nursery.start_soon(watch)
        await trio.sleep(2)
        await runner.kill(handle)
        await trio.sleep(2)
        assert results == [JobExit("killed", None, None, "killed by takler (scancel)")]
        nursery.cancel_scope.cancel()
    assert ["scancel", "9"] in fake.calls


async def test_kill_failure_is_a_kill_error() -> None:
    fake = FakeSlurm()
    fake.down = True
    with pytest.raises(KillError, match="Unable to contact"):
        await SlurmRunner(run=fake).kill(JobHandle("slurm", "9"))


async def test_unreachable_controller_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSlurm()
    fake.queue = {"1": "RUNNING"}
    fake.down = True
    runner = SlurmRunner(poll_interval=1.0, run=fake)
    async with open_runner(runner):
        with trio.move_on_after(10):
            await runner.wait(JobHandle("slurm", "1"))
            pytest.fail("an unreachable controller does not end a job")
        fake.down = False
        fake.finish("1", "COMPLETED", "0:0")
        with trio.fail_after(3):
            assert (await runner.wait(JobHandle("slurm", "1"))).status == "exited"


async def test_cancelled_wait_stops_watching(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSlurm()
    fake.queue = {"1": "RUNNING", "2": "RUNNING"}
    runner = SlurmRunner(poll_interval=1.0, run=fake)
    async with open_runner(runner), trio.open_nursery() as nursery:
        nursery.start_soon(runner.wait, JobHandle("slurm", "1"))
        with trio.move_on_after(2):
            await runner.wait(JobHandle("slurm", "2"))
        await trio.sleep(2)
        assert fake.calls[-1][-1] == "--jobs=1"
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- real Slurm

slurm = pytest.mark.slurm


@asynccontextmanager
async def real_runner() -> AsyncIterator[SlurmRunner]:
    async with open_runner(SlurmRunner(poll_interval=0.5)) as runner:
        yield runner


@slurm
async def test_real_success_and_failure(slurm_env: None, tmp_path: Path) -> None:
    async with real_runner() as runner:
        ok = make_spec(tmp_path, 'echo "hello from $SLURM_JOB_NAME"', name="ok")
        bad = make_spec(tmp_path, "echo failing >&2; exit 3", name="bad")
        handles = [await runner.submit(ok), await runner.submit(bad)]
        with trio.fail_after(30):
            results = await wait_all(runner, handles)
    assert results == [
        JobExit("exited", 0, None, "slurm: COMPLETED, exit code 0"),
        JobExit("failed", 3, None, "slurm: FAILED, exit code 3"),
    ]
    assert ok.job_out.read_text() == "hello from flow.fam.ok\n"
    assert bad.job_out.read_text() == "failing\n"


@slurm
async def test_real_kill(slurm_env: None, tmp_path: Path) -> None:
    async with real_runner() as runner:
        handle = await runner.submit(make_spec(tmp_path, "sleep 300"))
        results: list[JobExit] = []
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    results.append(await runner.wait(handle))

                nursery.start_soon(watch)
                await runner.kill(handle)
    assert results == [JobExit("killed", None, None, "killed by takler (scancel)")]


@slurm
async def test_real_bad_partition(slurm_env: None, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "true", TAKLER_SLURM_PARTITION="nosuch")
    with pytest.raises(SubmitError, match="invalid partition specified: nosuch"):
        await SlurmRunner(poll_interval=0.5).submit(spec)


@slurm
async def test_real_adoption_by_a_fresh_runner(slurm_env: None, tmp_path: Path) -> None:
    async with real_runner() as first:
        handle = await first.submit(make_spec(tmp_path, "sleep 300"))
    stored = JobHandle(handle.runner, handle.rid)
    async with real_runner() as second:
        async with trio.open_nursery() as nursery:
            results: list[JobExit] = []

            async def watch() -> None:
                results.append(await second.wait(stored))

            nursery.start_soon(watch)
            await trio.sleep(1.2)  # a few polls of a running job
            assert second.polls >= 2
            assert results == []
            # someone else cancels it: not a takler kill
            await trio.run_process(["scancel", handle.rid])
        gone = await second.wait(JobHandle("slurm", "999999"))
    assert results == [JobExit("cancelled", None, None, "slurm: CANCELLED")]
    assert gone == JobExit("lost", None, None, "slurm job 999999 no longer exists")


@slurm
@pytest.mark.slow
async def test_real_time_limit(slurm_env: None, tmp_path: Path) -> None:
    """Slurm's time limits count in minutes and are checked every 30 s: 60-90 s."""
    async with real_runner() as runner:
        handle = await runner.submit(make_spec(tmp_path, "sleep 300", TAKLER_SLURM_TIME="1"))
        with trio.fail_after(150):
            result = await runner.wait(handle)
    assert result.status == "timeout"
    assert result.reason == "slurm: TIMEOUT (time limit reached)"
