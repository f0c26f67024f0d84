"""ecFlow suites as they are: examples/ecflow (a .def, .ecf scripts with ecFlow's
usual head.h/tail.h, ecflow_client calls) run on a real server with real jobs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from takler.client.client import open_client
from takler.core import NodeStatus
from takler.core.node import Flow, Task
from takler.core.params import variables_for_job
from takler.ecflow import flows_from_def, flows_from_def_file
from takler.server import TaklerServer
from takler.server.jobs import render_task
from takler.tasks.render import job_bin_dir
from takler_cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ecflow"
SUITE_DEF = EXAMPLE / "suite.def"
TAKLER = [sys.executable, "-m", "takler_cli.main"]
ECFLOW_PYTHON = "/usr/bin/python3"
WAIT_LIMIT = 30.0


async def wait_for(server: TaklerServer, predicate) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(WAIT_LIMIT):
        while not predicate():
            await server.wait_changed()


@pytest.fixture
async def served(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[TaklerServer]:
    server = TaklerServer(port=0, home=tmp_path / "home", console=False)
    await server.start()
    nursery.start_soon(server.run)
    yield server
    server.stop_now()


def task(flow: Flow, path: str) -> Task:
    node = flow.find_node(path)
    assert isinstance(node, Task)
    return node


def shim_is_not_on_the_users_path() -> None:
    ours = job_bin_dir()
    assert str(ours) not in os.environ.get("PATH", "").split(os.pathsep)
    found = shutil.which("ecflow_client")
    assert found is None or Path(found).resolve() != (ours / "ecflow_client").resolve()


@pytest.mark.e2e
async def test_the_example_suite_runs_to_completion(tmp_path: Path, served: TaklerServer) -> None:
    shim_is_not_on_the_users_path()
    (flow,) = flows_from_def_file(SUITE_DEF)
    # Relative ECF_FILES / ECF_INCLUDE are taken from the .def's folder.
    assert flow.parameters["ECF_FILES"] == str(EXAMPLE / "ecf")
    assert flow.parameters["ECF_INCLUDE"] == str(EXAMPLE / "ecf" / "include")
    served.add_flows([flow])
    async with open_client("127.0.0.1", served.port, token=served.token) as client:
        await client.call("begin", path="/ecflow_demo")
        await wait_for(served, lambda: flow.state in (NodeStatus.complete, NodeStatus.aborted))
        history = await client.call("history", path="/ecflow_demo")
    assert flow.state is NodeStatus.complete, [(t.node_path, t.reason) for t in flow.tasks()]

    producer = task(flow, "produce/producer")
    assert producer.events["ready"].value is True
    assert producer.meters["progress"].value == 5
    assert producer.labels["info"].value == "done"
    assert task(flow, "consume/on_event").labels["seen"].value == (
        "ready seen by on_event in consume, try 1"
    )
    assert task(flow, "consume/waiter").labels["waited"].value == "producer complete"
    assert task(flow, "report/summary").labels["result"].value.startswith("ecflow_demo done on ")
    assert all(t.tryno == 1 for t in flow.tasks())

    # Triggers across families: the producer is submitted first, the report last.
    order = [row["path"] for row in history if row.get("submitted_at")]
    order = list(dict.fromkeys(order))
    assert order[0] == "/ecflow_demo/produce/producer"
    assert order[-1] == "/ecflow_demo/report/summary"

    # Jobs and outputs land in the server's home (the .def sets no ECF_HOME).
    job = (tmp_path / "home" / "ecflow_demo" / "produce" / "producer.job1").read_text()
    assert job.startswith("#!/bin/bash\n")
    assert f'export PATH="{job_bin_dir()}:$PATH"' in job
    assert "Produces the data" not in job  # %manual ... %end is left out
    assert "%ECF_" not in job
    shim_is_not_on_the_users_path()


FAILING_DEF = """\
suite errs
  edit ECF_FILES 'ecf'
  edit ECF_INCLUDE '{include}'
  edit ECF_TRIES '1'
  task bad
    label where ""
  task shadowed
    label via ""
endsuite
"""

BAD_ECF = """\
%include <head.h>
ecflow_client --label=where "before the failure"
ls /no/such/file/anywhere
ecflow_client --label=where "never here"
%include <tail.h>
"""

# A head that puts another ecflow_client first on PATH (as a site head.h puts
# /usr/local/apps/ecflow/%ECF_VERSION%/bin) still reaches takler.
SHADOWED_ECF = """\
%include <head.h>
export PATH={fake}:$PATH
ecflow_client --label=via "takler's ecflow_client"
%include <tail.h>
"""


def write_failing_suite(tmp_path: Path) -> Path:
    folder = tmp_path / "suite"
    (folder / "ecf").mkdir(parents=True)
    fake = tmp_path / "fake_ecflow" / "bin"
    fake.mkdir(parents=True)
    (fake / "ecflow_client").write_text(f"#!/bin/sh\ntouch {tmp_path}/fake-ran\nexit 1\n")
    (fake / "ecflow_client").chmod(0o755)
    (folder / "ecf" / "bad.ecf").write_text(BAD_ECF)
    (folder / "ecf" / "shadowed.ecf").write_text(SHADOWED_ECF.format(fake=fake))
    path = folder / "suite.def"
    path.write_text(FAILING_DEF.format(include=EXAMPLE / "ecf" / "include"))
    return path


@pytest.mark.e2e
async def test_a_failing_command_aborts_through_the_err_trap(
    tmp_path: Path, served: TaklerServer
) -> None:
    (flow,) = flows_from_def_file(write_failing_suite(tmp_path))
    served.add_flows([flow], begin=True)
    bad, shadowed = task(flow, "bad"), task(flow, "shadowed")
    await wait_for(
        served,
        lambda: bad.status is NodeStatus.aborted and shadowed.status is NodeStatus.complete,
    )
    assert bad.labels["where"].value == "before the failure"
    assert bad.reason is not None
    assert "failed with exit code 2" in bad.reason and bad.reason.startswith("line ")
    assert bad.tryno == 1  # ECF_TRIES 1
    assert shadowed.labels["via"].value == "takler's ecflow_client"
    assert not (tmp_path / "fake-ran").exists()


JOB_CMD_DEF = """\
suite cmd
  edit ECF_FILES '{files}'
  edit ECF_INCLUDE '{include}'
  edit TAKLER_RUNNER command
  edit ECF_JOB_CMD '%ECF_JOB% 1> %ECF_JOBOUT% 2>&1 & echo $!'
  edit ECF_KILL_CMD 'kill -15 %ECF_RID%'
  task t
endsuite
"""


@pytest.mark.e2e
async def test_an_ecf_job_cmd_submits_with_ecflow_variables(
    tmp_path: Path, served: TaklerServer
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "t.ecf").write_text("%include <head.h>\necho %ECF_NAME%\n%include <tail.h>\n")
    text = JOB_CMD_DEF.format(files=files, include=EXAMPLE / "ecf" / "include")
    (flow,) = flows_from_def(text, "cmd.def")
    served.add_flows([flow], begin=True)
    t = task(flow, "t")
    await wait_for(served, lambda: t.status in (NodeStatus.complete, NodeStatus.aborted))
    assert t.status is NodeStatus.complete, t.reason
    assert t.job is not None and t.job["runner"] == "command"
    assert "/cmd/t" in (tmp_path / "home" / "cmd" / "t.1").read_text()


@pytest.mark.e2e
async def test_ecf_out_puts_outputs_apart_from_job_files(
    tmp_path: Path, served: TaklerServer
) -> None:
    files, home, out = tmp_path / "files", tmp_path / "jobs", tmp_path / "out"
    (files / "f").mkdir(parents=True)
    (files / "f" / "t.ecf").write_text("%include <head.h>\necho output of %ECF_NAME%\n%include <tail.h>\n")
    (flow,) = flows_from_def(
        f"suite o\n edit ECF_FILES '{files}'\n edit ECF_HOME '{home}'\n edit ECF_OUT '{out}'\n"
        f" edit ECF_INCLUDE '{EXAMPLE / 'ecf' / 'include'}'\n family f\n  task t\n endfamily\nendsuite\n",
        "o.def",
    )
    served.add_flows([flow], begin=True)
    t = task(flow, "f/t")
    await wait_for(served, lambda: t.status in (NodeStatus.complete, NodeStatus.aborted))
    assert t.status is NodeStatus.complete, t.reason
    assert "output of /o/f/t" in (out / "o" / "f" / "t.1").read_text()  # its folders were made
    assert (home / "o" / "f" / "t.job1").is_file()
    assert not (home / "o" / "f" / "t.1").exists()


def ecf_task(tmp_path: Path, runner: str) -> tuple[Task, dict[str, str]]:
    files = tmp_path / "files"
    (files / "f").mkdir(parents=True, exist_ok=True)
    (files / "f" / "t.ecf").write_text(
        "#!/bin/bash\n#SBATCH --time=5\n# a comment at 100% load\n\necho %TASK% of %FAMILY%\n"
    )
    (flow,) = flows_from_def(
        f"suite s\n edit ECF_FILES {files}\n edit ECF_HOME {tmp_path / 'home'}\n"
        f" edit TAKLER_RUNNER {runner}\n family f\n  task t\n endfamily\nendsuite\n"
    )
    t = task(flow, "f/t")
    return t, variables_for_job(t)


@pytest.mark.parametrize("runner", ["local", "slurm"])
def test_ecf_jobs_put_the_shim_first_after_the_scripts_own_directives(
    tmp_path: Path, runner: str
) -> None:
    t, variables = ecf_task(tmp_path, runner)
    text, job, _ = render_task(t, variables, job_bin_dir())
    lines = text.splitlines()
    assert job == tmp_path / "home" / "s" / "f" / "t.job0"
    assert lines[0] == "#!/bin/bash"
    takler_directives = [line for line in lines if line.startswith("#SBATCH --job-name")]
    assert bool(takler_directives) is (runner == "slurm")
    path_line = lines.index(f'export PATH="{job_bin_dir()}:$PATH"')
    # The script's own #SBATCH line still comes before the first command.
    assert lines.index("#SBATCH --time=5") < path_line
    assert lines[path_line + 1].startswith("ecflow_client() {")
    assert lines[-1] == "echo t of f"
    assert "# a comment at 100% load" in lines
    shim_is_not_on_the_users_path()


# ---------------------------------------------------------------- the command line


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAKLER_")}
    env["TAKLER_HOME"] = str(home)
    return env


@pytest.mark.e2e
def test_takler_serve_runs_the_def_until_complete(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [*TAKLER, "serve", str(SUITE_DEF), "--port", "0", "--home", str(home), "--begin",
         "--until-complete"],
        env=clean_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = sorted(p.relative_to(home).as_posix() for p in home.glob("ecflow_demo/*/*.1"))
    assert outputs == [
        "ecflow_demo/consume/on_event.1",
        "ecflow_demo/consume/on_meter.1",
        "ecflow_demo/consume/waiter.1",
        "ecflow_demo/produce/producer.1",
        "ecflow_demo/report/summary.1",
    ]


@pytest.fixture
def idle_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``takler serve`` on a one-task .def, its home in TAKLER_HOME for ``main``."""
    home = tmp_path / "home"
    idle = tmp_path / "idle.def"
    idle.write_text("suite idle\n  task t\n    defstatus complete\nendsuite\n")
    for key in [k for k in os.environ if k.startswith("TAKLER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TAKLER_HOME", str(home))
    log = (tmp_path / "serve.out").open("wb")
    proc = subprocess.Popen(
        [*TAKLER, "serve", str(idle), "--port", "0", "--home", str(home), "--begin"],
        env=clean_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not (home / "server.json").is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"takler serve did not start: {(tmp_path / 'serve.out').read_text()}")
            time.sleep(0.05)
        yield home
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def has_ecflow() -> bool:
    if shutil.which(ECFLOW_PYTHON) is None:
        return False
    check = subprocess.run([ECFLOW_PYTHON, "-c", "import ecflow"], capture_output=True, check=False)
    return check.returncode == 0


ECFLOW_CHECK = textwrap.dedent(
    """
    import json, sys, ecflow
    problems = {}
    for path in sys.argv[1:]:
        try:
            defs = ecflow.Defs(path)
            problem = defs.check()
            if problem and "Error" in problem:
                problems[path] = problem
        except Exception as e:
            problems[path] = str(e)
    print(json.dumps(problems))
    """
)


@pytest.mark.e2e
def test_load_then_export_def_gives_a_def_ecflow_accepts(
    idle_server: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", str(SUITE_DEF)]) == 0
    assert "loaded ecflow_demo" in capsys.readouterr().out
    assert main(["export-def", "/ecflow_demo"]) == 0
    plain = capsys.readouterr().out
    assert "suite ecflow_demo" in plain and "suite idle" not in plain
    assert f"edit ECF_FILES '{EXAMPLE / 'ecf'}'" in plain
    (again,) = flows_from_def(plain, "exported")
    (original,) = flows_from_def_file(SUITE_DEF)
    assert [n.node_path for n in again.walk()] == [n.node_path for n in original.walk()]
    assert again.find_node("consume").trigger is not None

    assert main(["export-def", "--state"]) == 0
    stated = capsys.readouterr().out
    assert stated.splitlines()[1] == "defs_state MIGRATE"
    assert "suite idle" in stated and "task t # state:complete" in stated
    assert main(["export-def", "/nosuchflow"]) == 1
    assert "nosuchflow" in capsys.readouterr().err

    if not has_ecflow():
        pytest.skip("ecFlow's Python module (python3-ecflow) is not installed")
    paths = []
    for name, text in (("plain", plain), ("stated", stated)):
        path = tmp_path / f"{name}.def"
        path.write_text(text)
        paths.append(str(path))
    check = subprocess.run(
        [ECFLOW_PYTHON, "-c", ECFLOW_CHECK, *paths],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(check.stdout.strip().splitlines()[-1]) == {}
