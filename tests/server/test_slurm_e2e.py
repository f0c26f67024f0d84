"""End to end, in one process: flows whose jobs go through Slurm (a real
cluster from scripts/local-slurm.sh) or through the command runner (fake
submit, status and kill scripts), a real server on a loopback port, jobs
talking HTTP back to it."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from takler.client.client import open_client
from takler.core import Flow, NodeStatus
from takler.core.node import Task
from takler.core.params import variables_for_job
from takler.runners import KillError, RunnerSet, SlurmRunner
from takler.runners.slurm import CommandResult, run_command
from takler.server import TaklerServer
from takler.server.jobs import handle_from_data

pytestmark = pytest.mark.e2e

HEAD = '{% include "head.takler" %}\n'
TAIL = '{% include "tail.takler" %}\n'
POLLS = {"TAKLER_SLURM_POLL": "0.5", "TAKLER_COMMAND_POLL": "0.2"}
_ENDED = (NodeStatus.complete, NodeStatus.aborted)
# How a job's head reports SIGTERM: bash's trap, or the ERR trap when the
# foreground command died of it first.
TERMINATED = r"(killed by signal TERM|error at line \d+ \(exit code 143\))"


def said(first: str) -> re.Pattern[str]:
    """A reason: the runner's account first, then what the job said on SIGTERM."""
    return re.compile(re.escape(first) + "; the job said: " + TERMINATED)


def script(home: Path, name: str, body: str) -> Path:
    path = home / "scripts" / f"{name}.takler"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + body + "\n" + TAIL)
    return path


async def wait_for(server: TaklerServer, predicate: Callable[[], bool], limit: float) -> None:
    """Wait, event-driven, until ``predicate()`` holds; at most ``limit`` seconds."""
    with trio.fail_after(limit):
        while not predicate():
            await server.wait_changed()


class CountingSlurm:
    """Runs Slurm's commands for real and keeps every squeue command line."""

    def __init__(self) -> None:
        self.squeues: list[list[str]] = []

    async def __call__(self, args: Sequence[str]) -> CommandResult:
        if args[0] == "squeue":
            self.squeues.append(list(args))
        return await run_command(args)


def slurm_runners(run: CountingSlurm | None = None) -> dict[str, Any]:
    runners = RunnerSet.standard(env=POLLS).runners
    if run is not None:
        runners["slurm"] = SlurmRunner(0.5, run=run)
    return runners


class Served:
    """A server running in the test's nursery; :meth:`stop` waits until it has stopped."""

    def __init__(self, server: TaklerServer) -> None:
        self.server = server
        self.stopped = trio.Event()

    async def run(self) -> None:
        try:
            await self.server.run()
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        self.server.stop()
        with trio.fail_after(10):
            await self.stopped.wait()


async def serve(
    nursery: trio.Nursery, home: Path, runners: dict[str, Any], port: int = 0
) -> Served:
    served = Served(TaklerServer(port=port, home=home, console=False, runners=runners))
    await served.server.start()
    nursery.start_soon(served.run)
    return served


@pytest.fixture
async def stop_all() -> AsyncIterator[list[Served]]:
    """Servers to stop at the end of a test, whatever happened, and their
    running jobs to kill: a job whose server is gone retries its child
    commands for hours, holding a CPU of the test cluster."""
    servers: list[Served] = []
    yield servers
    for served in servers:
        served.server.stop_now()
        assert served.server.jobs is not None
        runners = served.server.jobs.runners
        for task in served.server.bunch.tasks():
            if task.job and task.status in (NodeStatus.submitted, NodeStatus.active):
                handle = handle_from_data(task.job)
                with contextlib.suppress(KillError):
                    await runners[handle.runner].kill(handle)


def slurm_flow(tmp_path: Path, name: str) -> Flow:
    flow = Flow(name)
    flow.add_parameter("TAKLER_HOME", tmp_path / "jobs")
    flow.add_parameter("TAKLER_RUNNER", "slurm")
    flow.add_parameter("TAKLER_TRIES", 1)
    return flow


def add_task(flow: Flow, tmp_path: Path, name: str, body: str, **variables: str) -> Task:
    task = flow.add_task(name)
    task.add_parameter("TAKLER_SCRIPT", script(tmp_path, f"{flow.name}-{name}", body))
    for key, value in variables.items():
        task.add_parameter(key, value)
    return task


async def history_end(server: TaklerServer, path: str) -> dict[str, Any]:
    """The last job record of ``path`` once its end is written.

    The end is written when the runner sees the job gone, with no change to
    wait for: this polls.
    """
    with trio.fail_after(30):
        while True:
            records = await server.store_call(server.store.history, path)
            if records and records[-1]["exit"] is not None:
                return dict(records[-1])
            await trio.sleep(0.1)


async def squeue_state(rid: str) -> str:
    proc = await trio.run_process(
        ["squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={rid}"],
        capture_stdout=True,
        check=False,
    )
    return proc.stdout.decode().strip()


# ---------------------------------------------------------------- Slurm


@pytest.mark.slurm
async def test_slurm_jobs_end_in_the_right_state_with_the_right_reason(
    slurm_env: None, tmp_path: Path, stop_all: list[Served], nursery: trio.Nursery
) -> None:
    run = CountingSlurm()
    served = await serve(nursery, tmp_path / "home", slurm_runners(run))
    stop_all.append(served)
    server = served.server
    flow = slurm_flow(tmp_path, "s")
    flow.add_parameter("TAKLER_SLURM_TIME", "5")
    ok = add_task(flow, tmp_path, "ok", 'echo "job $SLURM_JOB_ID"')
    bad = add_task(flow, tmp_path, "bad", "exit 3")
    vanished = add_task(flow, tmp_path, "vanished", "kill -KILL $$")
    slow = add_task(flow, tmp_path, "slow", "sleep 300")
    pending = add_task(flow, tmp_path, "pending", "true", TAKLER_SLURM_OPTIONS="--begin=now+600")
    nowhere = add_task(flow, tmp_path, "nowhere", "true", TAKLER_SLURM_PARTITION="nosuch")
    server.add_flows([flow], begin=True)
    await server.commit()

    async with open_client("127.0.0.1", server.port, token=server.token) as client:
        await wait_for(
            server,
            lambda: slow.status is NodeStatus.active and pending.rid is not None,
            limit=30,
        )
        assert await client.call("kill", path="/s/slow") == {"killed": ["/s/slow"]}
        assert await client.call("kill", path="/s/pending") == {"killed": ["/s/pending"]}
        await wait_for(server, lambda: all(t.status in _ENDED for t in flow.tasks()), limit=30)

    assert ok.status is NodeStatus.complete
    assert ok.rid is not None and ok.rid.isdigit()
    assert variables_for_job(ok)["TAKLER_RID"] == ok.rid
    job_out = tmp_path / "jobs" / "s" / "ok.1"
    assert job_out.read_text().splitlines()[0] == f"job {ok.rid}"
    job_text = (tmp_path / "jobs" / "s" / "ok.job1").read_text()
    assert "#SBATCH --job-name=s.ok\n" in job_text
    assert "#SBATCH --time=5\n" in job_text
    assert f"#SBATCH --output={job_out}\n" in job_text

    # The job told its own end before Slurm did, and Slurm adds nothing to
    # it: the job's reason stays; Slurm's account is in the history.
    assert bad.status is NodeStatus.aborted
    assert bad.reason == "exited with code 3 before takler_complete"
    end = await history_end(server, "/s/bad")
    assert (end["exit"], end["code"], end["reason"]) == ("failed", 3, "slurm: FAILED, exit code 3")

    # A job that could tell nothing: Slurm's reason.
    assert vanished.status is NodeStatus.aborted
    assert vanished.reason == "slurm: FAILED, killed by signal 9 (SIGKILL)"

    assert slow.status is NodeStatus.aborted
    end = await history_end(server, "/s/slow")
    assert slow.reason is not None and said("killed by takler (scancel)").fullmatch(slow.reason)
    assert (end["exit"], end["reason"]) == ("killed", "killed by takler (scancel)")

    # Killed before it ever ran: only Slurm can tell.
    assert pending.status is NodeStatus.aborted
    assert pending.reason == "killed by takler (scancel)"

    assert nowhere.status is NodeStatus.aborted
    assert nowhere.rid is None
    assert nowhere.reason == "submission failed: sbatch: error: invalid partition specified: nosuch"

    # Every poll is one squeue call for all the watched jobs at once.
    runner = server.jobs.runners["slurm"]  # type: ignore[union-attr]
    assert len(run.squeues) == runner.polls > 0
    assert max(len(args[-1].split(",")) for args in run.squeues) >= 3


@pytest.mark.slurm
@pytest.mark.slow
async def test_a_slurm_job_over_its_time_limit_is_aborted(
    slurm_env: None, tmp_path: Path, stop_all: list[Served], nursery: trio.Nursery
) -> None:
    """Slurm checks time limits about every 30 s: a one-minute limit ends the job in 60-90 s."""
    served = await serve(nursery, tmp_path / "home", slurm_runners())
    stop_all.append(served)
    server = served.server
    flow = slurm_flow(tmp_path, "tl")
    late = add_task(flow, tmp_path, "late", "sleep 300", TAKLER_SLURM_TIME="1")
    server.add_flows([flow], begin=True)
    await server.commit()
    await wait_for(server, lambda: late.status in _ENDED, limit=150)
    assert late.status is NodeStatus.aborted
    timeout = said("slurm: TIMEOUT (time limit reached)")
    end = await history_end(server, "/tl/late")
    assert late.reason is not None and timeout.fullmatch(late.reason)
    assert (end["exit"], end["reason"]) == ("timeout", "slurm: TIMEOUT (time limit reached)")


@pytest.mark.slurm
async def test_a_restarted_server_adopts_its_running_slurm_jobs(
    slurm_env: None, tmp_path: Path, stop_all: list[Served], nursery: trio.Nursery
) -> None:
    home = tmp_path / "home"
    first = await serve(nursery, home, slurm_runners())
    stop_all.append(first)
    flow = slurm_flow(tmp_path, "r")
    survivor = add_task(flow, tmp_path, "survivor", "sleep 8")
    doomed = add_task(flow, tmp_path, "doomed", "sleep 300")
    first.server.add_flows([flow], begin=True)
    await first.server.commit()
    await wait_for(
        first.server,
        lambda: survivor.status is NodeStatus.active and doomed.status is NodeStatus.active,
        limit=30,
    )
    survivor_rid, doomed_rid = survivor.rid, doomed.rid
    assert survivor_rid is not None and doomed_rid is not None
    await first.stop()

    # While no server runs, someone cancels one job; it ends for good only
    # after Slurm's KillWait, and can then tell nobody.
    await trio.run_process(["scancel", doomed_rid])
    with trio.fail_after(30):
        while True:  # Slurm tells nobody: ask it
            if await squeue_state(doomed_rid) == "CANCELLED":
                break
            await trio.sleep(0.2)
    assert await squeue_state(survivor_rid) == "RUNNING"

    second = await serve(nursery, home, slurm_runners(), port=first.server.port)
    stop_all.append(second)
    server = second.server
    assert server.jobs is not None
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    watched = {path: w.handle.rid for path, w in server.jobs.watches.items() if w.handle}
    assert watched == {"/r/survivor": survivor_rid, "/r/doomed": doomed_rid}
    restored = server.bunch.find_node("/r/survivor")
    lost = server.bunch.find_node("/r/doomed")
    assert isinstance(restored, Task) and isinstance(lost, Task)
    await wait_for(server, lambda: restored.status in _ENDED and lost.status in _ENDED, 30)
    assert restored.status is NodeStatus.complete
    assert restored.rid == survivor_rid
    assert lost.status is NodeStatus.aborted
    assert lost.reason == "slurm: CANCELLED"


# ---------------------------------------------------------------- command runner


def fake_batch(tmp_path: Path) -> dict[str, str]:
    """A batch system of three scripts: a job runs in a session of its own and
    is there while any process of its group lives; its exit code, or its
    cancellation, is written next to its output."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    scripts = {
        "submit": """
            [ "$1" = --queue ] && { echo "submit: error: no queue named '$2'" >&2; exit 1; }
            setsid bash -c 'bash "$0" > "$1" 2>&1 < /dev/null; echo $? > "$1.rc"' "$1" "$2" \\
                > /dev/null 2>&1 &
            echo "Job fake.$! queued"
        """,
        "status": """
            for pid in $(pgrep -g "$1"); do
                case $(ps -o stat= -p "$pid") in Z* | "") ;; *) echo RUNNING; exit 0 ;; esac
            done
            if [ -f "$2.cancelled" ]; then echo CANCELLED; exit 0; fi
            if [ -f "$2.rc" ]; then
                rc=$(cat "$2.rc")
                if [ "$rc" = 0 ]; then echo COMPLETED; else echo "FAILED $rc"; fi
                exit 0
            fi
            exit 1
        """,
        "kill": """
            touch "$2.cancelled"
            kill -TERM -- "-$1"
        """,
    }
    for name, body in scripts.items():
        path = bindir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return {
        "TAKLER_RUNNER": "command",
        "TAKLER_JOB_CMD": f"{bindir}/submit %TAKLER_JOB% %TAKLER_JOBOUT%",
        "TAKLER_JOB_ID_REGEX": r"^Job fake\.(\d+) queued$",
        "TAKLER_STATUS_CMD": f"{bindir}/status %TAKLER_RID% %TAKLER_JOBOUT%",
        "TAKLER_KILL_CMD": f"{bindir}/kill %TAKLER_RID% %TAKLER_JOBOUT%",
    }


async def test_the_command_runner_through_the_server(
    tmp_path: Path, stop_all: list[Served], nursery: trio.Nursery
) -> None:
    served = await serve(nursery, tmp_path / "home", slurm_runners())
    stop_all.append(served)
    server = served.server
    flow = Flow("c")
    flow.add_parameter("TAKLER_HOME", tmp_path / "jobs")
    flow.add_parameter("TAKLER_TRIES", 1)
    for key, value in fake_batch(tmp_path).items():
        flow.add_parameter(key, value)
    ok = add_task(flow, tmp_path, "ok", "echo done")
    bad = add_task(flow, tmp_path, "bad", "exit 3")
    vanished = add_task(flow, tmp_path, "vanished", "kill -KILL $$")
    slow = add_task(flow, tmp_path, "slow", "sleep 300")
    refused = add_task(flow, tmp_path, "refused", "true")
    refused.add_parameter(
        "TAKLER_JOB_CMD", f"{tmp_path}/bin/submit --queue nosuch %TAKLER_JOB% %TAKLER_JOBOUT%"
    )
    server.add_flows([flow], begin=True)
    await server.commit()

    async with open_client("127.0.0.1", server.port, token=server.token) as client:
        await wait_for(server, lambda: slow.status is NodeStatus.active, limit=20)
        assert await client.call("kill", path="/c/slow") == {"killed": ["/c/slow"]}
        await wait_for(server, lambda: all(t.status in _ENDED for t in flow.tasks()), limit=20)

    assert ok.status is NodeStatus.complete
    assert ok.rid is not None and re.fullmatch(r"\d+", ok.rid)
    assert (tmp_path / "jobs" / "c" / "ok.1").read_text() == "done\n"
    assert bad.status is NodeStatus.aborted
    assert bad.reason == "exited with code 3 before takler_complete"
    end = await history_end(server, "/c/bad")
    assert (end["exit"], end["code"], end["reason"]) == (
        "failed", 3, "batch system: FAILED, exit code 3"
    )  # fmt: skip
    assert vanished.status is NodeStatus.aborted
    assert vanished.reason == "batch system: FAILED, exit code 137"
    assert slow.status is NodeStatus.aborted
    killed = said("killed by takler (TAKLER_KILL_CMD)")
    end = await history_end(server, "/c/slow")
    assert slow.reason is not None and killed.fullmatch(slow.reason)
    assert (end["exit"], end["reason"]) == ("killed", "killed by takler (TAKLER_KILL_CMD)")
    assert refused.status is NodeStatus.aborted
    assert refused.reason is not None
    assert refused.reason.startswith("submission failed: /c/refused: ")
    assert refused.reason.endswith("failed: submit: error: no queue named 'nosuch'")
