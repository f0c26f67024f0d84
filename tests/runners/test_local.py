"""The local runner with real bash processes."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import trio
import trio.testing

from takler.runners.base import JobExit, JobHandle, JobSpec, SubmitError
from takler.runners.local import LocalRunner, process_start_time


def make_spec(tmp_path: Path, body: str, name: str = "t1") -> JobSpec:
    job_file = tmp_path / f"{name}.job1"
    job_file.write_text("#!/bin/bash\n" + body + "\n")
    return JobSpec(
        path=f"/flow/{name}",
        job_file=job_file,
        job_out=tmp_path / "out" / f"{name}.1",
        tryno=1,
        variables={},
    )


async def started_job(
    runner: LocalRunner, tmp_path: Path, setup: str, body: str
) -> tuple[JobHandle, JobSpec]:
    """Submit a job and return once it has run ``setup`` (it says so through a fifo)."""
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    spec = make_spec(tmp_path, f"{setup}\necho ready > {fifo}\n{body}")
    handle = await runner.submit(spec)
    with trio.fail_after(5):
        assert await trio.to_thread.run_sync(fifo.read_text) == "ready\n"
    return handle, spec


async def run_job(tmp_path: Path, body: str) -> tuple[JobExit, JobSpec]:
    runner = LocalRunner()
    spec = make_spec(tmp_path, body)
    handle = await runner.submit(spec)
    with trio.fail_after(5):
        return await runner.wait(handle), spec


async def test_exit_zero_writes_output_in_a_new_directory(tmp_path: Path) -> None:
    result, spec = await run_job(tmp_path, "echo out; echo err >&2")
    assert result == JobExit("exited", 0, None, "job exited with code 0")
    assert spec.job_out.read_text().split() == ["out", "err"]


async def test_output_file_is_truncated(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "echo second")
    spec.job_out.parent.mkdir()
    spec.job_out.write_text("a much longer first line\n")
    runner = LocalRunner()
    with trio.fail_after(5):
        await runner.wait(await runner.submit(spec))
    assert spec.job_out.read_text() == "second\n"


async def test_non_zero_exit_is_failed(tmp_path: Path) -> None:
    result, _ = await run_job(tmp_path, "exit 3")
    assert result == JobExit("failed", 3, None, "job exited with code 3")


async def test_death_by_signal_is_signalled(tmp_path: Path) -> None:
    result, _ = await run_job(tmp_path, "kill -9 $$")
    assert result == JobExit("signalled", None, 9, "killed by signal 9 (SIGKILL)")


async def test_job_runs_in_its_own_session_with_stdin_closed(tmp_path: Path) -> None:
    runner = LocalRunner()
    handle, spec = await started_job(
        runner, tmp_path, 'read -r line; echo "read=$? line=$line" >&2', "sleep 30"
    )
    pid = int(handle.rid)
    assert os.getsid(pid) == pid
    assert handle.runner == "local"
    # Dated by the boot clock just before the spawn, not read from /proc.
    real = process_start_time(pid)
    assert handle.started is not None and real is not None
    assert 0 <= real - math.floor(handle.started) <= 100
    await runner.kill(handle, grace=0.5)
    with trio.fail_after(5):
        await runner.wait(handle)
    assert spec.job_out.read_text() == "read=1 line=\n"


def group_alive(pgid: int) -> bool:
    """Whether a process other than a zombie is in process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            return True
    return False


async def test_kill_terminates_the_process_group(tmp_path: Path) -> None:
    runner = LocalRunner()
    handle, _ = await started_job(runner, tmp_path, "sleep 30 &", "sleep 30")
    assert group_alive(int(handle.rid))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            results: list[JobExit] = []

            async def watch() -> None:
                results.append(await runner.wait(handle))

            nursery.start_soon(watch)
            await runner.kill(handle, grace=0.5)
    assert results == [JobExit("killed", None, signal.SIGTERM, "killed by takler (SIGTERM)")]
    for _ in range(100):  # the orphaned `sleep &` dies and init reaps it, soon
        if not group_alive(int(handle.rid)):
            break
        await trio.sleep(0.02)
    else:
        pytest.fail("a process of the job's group outlived the kill")


async def test_kill_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    runner = LocalRunner()
    # Ignored signals stay ignored across exec, so sleep ignores SIGTERM too.
    handle, _ = await started_job(runner, tmp_path, "trap '' TERM", "sleep 30")
    start = trio.current_time()
    with trio.fail_after(5):
        await runner.kill(handle, grace=0.5)
        result = await runner.wait(handle)
    assert trio.current_time() - start >= 0.5
    assert result == JobExit("killed", None, signal.SIGKILL, "killed by takler (SIGKILL)")


async def test_kill_of_a_finished_job_is_not_an_error(tmp_path: Path) -> None:
    runner = LocalRunner()
    handle = await runner.submit(make_spec(tmp_path, "exit 0"))
    with trio.fail_after(5):
        assert (await runner.wait(handle)).status == "exited"
    await runner.kill(handle, grace=0.5)


async def test_submit_of_a_missing_job_file_fails(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "true")
    spec.job_file.unlink()
    with pytest.raises(SubmitError, match="does not exist") as info:
        await LocalRunner().submit(spec)
    assert info.value.code == "submit_failed"


def adopted(proc: trio.Process, started: float | None = None) -> JobHandle:
    real = process_start_time(proc.pid)
    assert real is not None
    return JobHandle("local", str(proc.pid), float(real) if started is None else started)


async def test_adopted_job_ending_is_lost_with_unknown_status() -> None:
    proc = await trio.lowlevel.open_process(["sleep", "30"], start_new_session=True)
    try:
        runner = LocalRunner()
        results: list[JobExit] = []
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    results.append(await runner.wait(adopted(proc)))

                nursery.start_soon(watch)
                await trio.testing.wait_all_tasks_blocked()
                assert results == []
                proc.kill()
    finally:
        proc.kill()
        await proc.wait()
    assert results == [
        JobExit("lost", None, None, f"job process {proc.pid} ended while the server was away")
    ]


async def test_adopted_job_can_be_killed() -> None:
    proc = await trio.lowlevel.open_process(["sleep", "30"], start_new_session=True)
    try:
        runner = LocalRunner()
        handle = adopted(proc)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                results: list[JobExit] = []

                async def watch() -> None:
                    results.append(await runner.wait(handle))

                nursery.start_soon(watch)
                await runner.kill(handle, grace=0.5)
    finally:
        proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGTERM
    assert results == [JobExit("killed", None, None, "killed by takler (SIGTERM)")]


async def test_adopting_a_dead_pid_is_lost() -> None:
    proc = await trio.lowlevel.open_process(["true"], start_new_session=True)
    handle = adopted(proc)
    await proc.wait()
    result = await LocalRunner().wait(handle)
    assert result == JobExit("lost", None, None, f"job process {proc.pid} no longer exists")


async def test_reused_pid_is_lost_and_not_killed() -> None:
    proc = await trio.lowlevel.open_process(["sleep", "30"], start_new_session=True)
    try:
        handle = adopted(proc, started=1.0)  # the start time of some earlier process
        runner = LocalRunner()
        assert (await runner.wait(handle)).status == "lost"
        await runner.kill(handle, grace=0.5)
        assert proc.returncode is None
    finally:
        proc.kill()
        await proc.wait()


async def test_a_handle_dated_just_before_the_spawn_is_the_same_process() -> None:
    # What a restarted server checks before it adopts a job: the process
    # started in the tick of the handle's date or within the slack after it.
    proc = await trio.lowlevel.open_process(["sleep", "30"], start_new_session=True)
    try:
        real = process_start_time(proc.pid)
        assert real is not None
        runner = LocalRunner()
        assert runner._same_process(adopted(proc, started=real - 0.5))
        assert runner._same_process(adopted(proc, started=real + 0.7))  # same tick
        assert not runner._same_process(adopted(proc, started=real + 1.2))  # dated after it
        assert not runner._same_process(adopted(proc, started=real - 250.0))  # long before
    finally:
        proc.kill()
        await proc.wait()


def test_process_start_time() -> None:
    assert isinstance(process_start_time(os.getpid()), int)
    assert process_start_time(2**22 + 1) is None


async def test_submit_with_an_output_that_cannot_be_opened_fails(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "true")
    (tmp_path / "out").write_text("a file where the output folder should be\n")
    with pytest.raises(SubmitError, match="cannot open job output") as info:
        await LocalRunner().submit(spec)
    assert info.value.code == "submit_failed"
