"""The command runner against a fake batch system made of bash scripts."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from takler.runners.base import JobExit, JobHandle, JobSpec, KillError, SubmitError
from takler.runners.command import CommandRunner, expand

POLL = 0.03


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    """A fake batch system: ``qsub JOB`` queues, ``qstat ID`` reports, ``qdel ID`` removes.

    The queue is a directory with one file per job holding what qstat prints;
    qstat exits 1 for a job that is not there.
    """
    bindir = tmp_path / "bin"
    queue = tmp_path / "queue"
    bindir.mkdir()
    queue.mkdir()
    scripts = {
        "qsub": f"""
            echo "$@" >> {tmp_path}/qsub.log
            [ -f "$1" ] || {{ echo "qsub: script $1 not found" >&2; exit 2; }}
            n=$(( $(ls {queue} | wc -l) + 1001 ))
            echo RUNNING > {queue}/$n.server
            echo "$n.server"
        """,
        "qstat": f"""
            [ -f {queue}/$1 ] || {{ echo "qstat: Unknown Job Id $1" >&2; exit 153; }}
            cat {queue}/$1
        """,
        "qdel": f"""
            [ -f {queue}/$1 ] || {{ echo "qdel: Unknown Job Id $1" >&2; exit 1; }}
            rm {queue}/$1
        """,
    }
    for name, body in scripts.items():
        path = bindir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return tmp_path


def make_spec(tmp_path: Path, **variables: str) -> JobSpec:
    job_file = tmp_path / "t1.job1"
    job_file.write_text("#!/bin/bash\ntrue\n")
    return JobSpec("/flow/t1", job_file, tmp_path / "out" / "t1.1", 1, variables)


def pbs(batch: Path, **more: str) -> dict[str, str]:
    return {
        "TAKLER_JOB_CMD": f"{batch}/bin/qsub {{TAKLER_JOB}} -o {{TAKLER_JOBOUT}}",
        "TAKLER_KILL_CMD": f"{batch}/bin/qdel {{TAKLER_RID}}",
        "TAKLER_STATUS_CMD": f"{batch}/bin/qstat {{TAKLER_RID}}",
        **more,
    }


def set_state(batch: Path, rid: str, text: str) -> None:
    (batch / "queue" / rid).write_text(text + "\n")


async def test_submit_runs_the_template_and_keeps_kill_and_status(batch: Path) -> None:
    spec = make_spec(batch, **pbs(batch))
    handle = await CommandRunner(POLL).submit(spec)
    assert handle == JobHandle(
        "command",
        "1001.server",
        extra={
            "kill_cmd": f"{batch}/bin/qdel 1001.server",
            "status_cmd": f"{batch}/bin/qstat 1001.server",
        },
    )
    assert (batch / "qsub.log").read_text() == f"{spec.job_file} -o {spec.job_out}\n"
    assert spec.job_out.parent.is_dir()


async def test_ecflow_style_templates_and_id_regex(batch: Path) -> None:
    spec = make_spec(
        batch,
        TAKLER_JOB_CMD=f'{batch}/bin/qsub %TAKLER_JOB% | awk \'{{print "Job <" $1 "> is submitted, 100%%"}}\'',
        TAKLER_JOB_ID_REGEX=r"Job <(\d+)\.",
        TAKLER_KILL_CMD="echo %QUEUE% %TAKLER_RID%",
        QUEUE="normal",
    )
    handle = await CommandRunner(POLL).submit(spec)
    assert handle.rid == "1001"
    assert handle.extra == {"kill_cmd": "echo normal 1001"}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({}, "TAKLER_JOB_CMD is not set"),
        (
            {"TAKLER_JOB_CMD": "qsub {NOSUCH}"},
            "TAKLER_JOB_CMD uses 'NOSUCH', which is not a variable",
        ),
        ({"TAKLER_JOB_CMD": "qsub %NOSUCH%"}, "uses 'NOSUCH'"),
        ({"TAKLER_JOB_CMD": "qsub {TAKLER_JOB"}, "bad TAKLER_JOB_CMD template"),
        (
            {"TAKLER_JOB_CMD": "echo 1", "TAKLER_STATUS_CMD": "qstat {RID}"},
            "TAKLER_STATUS_CMD uses",
        ),
        ({"TAKLER_JOB_CMD": "echo 1", "TAKLER_JOB_ID_REGEX": "("}, "bad TAKLER_JOB_ID_REGEX"),
        ({"TAKLER_JOB_CMD": "echo no id here", "TAKLER_JOB_ID_REGEX": r"(\d+)"}, "no job id"),
        ({"TAKLER_JOB_CMD": "true"}, "no job id in the output of 'true'"),
        ({"TAKLER_JOB_CMD": "echo refused >&2; exit 4"}, "failed: refused$"),
    ],
)
async def test_submit_errors(tmp_path: Path, variables: dict[str, str], message: str) -> None:
    with pytest.raises(SubmitError, match=message):
        await CommandRunner(POLL).submit(make_spec(tmp_path, **variables))


async def test_submit_failure_carries_the_commands_error(batch: Path) -> None:
    spec = make_spec(batch, TAKLER_JOB_CMD=f"{batch}/bin/qsub /nonexistent")
    with pytest.raises(SubmitError, match="qsub: script /nonexistent not found"):
        await CommandRunner(POLL).submit(spec)


async def wait_for(runner: CommandRunner, handle: JobHandle, batch: Path, final: str) -> JobExit:
    """Wait on the job while it runs for a few polls, then give it state ``final``."""
    async with trio.open_nursery() as nursery:
        results: list[JobExit] = []

        async def watch() -> None:
            results.append(await runner.wait(handle))

        nursery.start_soon(watch)
        await trio.sleep(4 * POLL)
        assert results == []
        if final:
            set_state(batch, handle.rid, final)
        else:
            (batch / "queue" / handle.rid).unlink()
    return results[0]


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ("", JobExit("exited", None, None, "job left the batch system")),
        ("COMPLETED", JobExit("exited", 0, None, "batch system: COMPLETED, exit code 0")),
        ("done 0", JobExit("exited", 0, None, "batch system: DONE, exit code 0")),
        ("FAILED 3", JobExit("failed", 3, None, "batch system: FAILED, exit code 3")),
        ("COMPLETED 2", JobExit("failed", 2, None, "batch system: COMPLETED, exit code 2")),
        ("TIMEOUT", JobExit("timeout", None, None, "batch system: TIMEOUT")),
        ("CANCELLED", JobExit("cancelled", None, None, "batch system: CANCELLED")),
        ("NODE_FAIL", JobExit("node_fail", None, None, "batch system: NODE_FAIL")),
    ],
)
async def test_status_command_contract(batch: Path, final: str, expected: JobExit) -> None:
    runner = CommandRunner(POLL)
    handle = await runner.submit(make_spec(batch, **pbs(batch)))
    set_state(batch, handle.rid, "PENDING")
    with trio.fail_after(5):
        assert await wait_for(runner, handle, batch, final) == expected


async def test_kill_runs_the_kill_command_and_wait_says_killed(batch: Path) -> None:
    runner = CommandRunner(POLL)
    handle = await runner.submit(make_spec(batch, **pbs(batch)))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            results: list[JobExit] = []

            async def watch() -> None:
                results.append(await runner.wait(handle))

            nursery.start_soon(watch)
            await runner.kill(handle)
            assert not (batch / "queue" / handle.rid).exists()
    assert results == [JobExit("killed", None, None, "killed by takler (TAKLER_KILL_CMD)")]


async def test_kill_of_a_job_already_gone_is_not_an_error(batch: Path) -> None:
    runner = CommandRunner(POLL)
    handle = await runner.submit(make_spec(batch, **pbs(batch)))
    await runner.kill(handle)
    await runner.kill(handle)  # qdel fails, qstat says the job is gone


async def test_kill_errors(batch: Path) -> None:
    runner = CommandRunner(POLL)
    refuse = "echo 'qdel: Unauthorized Request' >&2; exit 159"
    handle = await runner.submit(make_spec(batch, **pbs(batch, TAKLER_KILL_CMD=refuse)))
    with pytest.raises(KillError, match=r"qdel: Unauthorized Request$"):
        await runner.kill(handle)
    assert (batch / "queue" / handle.rid).exists()
    with pytest.raises(KillError, match="no TAKLER_KILL_CMD"):
        await runner.kill(JobHandle("command", "7"))


async def test_adopted_handle_is_watched_with_its_stored_status_command(batch: Path) -> None:
    handle = await CommandRunner(POLL).submit(make_spec(batch, **pbs(batch)))
    stored = JobHandle(handle.runner, handle.rid, extra=dict(handle.extra))
    with trio.fail_after(5):
        result = await wait_for(CommandRunner(POLL), stored, batch, "FAILED 1")
    assert result.status == "failed"


async def test_without_status_command_wait_blocks_until_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.move_on_after(24 * 3600) as scope:
        await CommandRunner(POLL).wait(JobHandle("command", "1001.server"))
    assert scope.cancelled_caught


def test_expand() -> None:
    variables = {"A": "x", "B": "y"}
    assert expand("{A}-{B} {{literal}}", variables) == "x-y {literal}"
    assert expand("%A%-%B% ${HOME} {braces} 100%%", variables) == "x-y ${HOME} {braces} 100%"
    with pytest.raises(KeyError):
        expand("%C%", variables)
