"""Rendering Jinja2 task scripts into job files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from takler.tasks.render import JobRenderError, default_include_dir, render_job, write_job

JOB_VARIABLES = {
    "TAKLER_HOST": "localhost",
    "TAKLER_PORT": "4141",
    "TAKLER_NAME": "/flow/fam/t1",
    "TAKLER_PASSWORD": 'it\'s "secret" $x',
    "TAKLER_TRYNO": "1",
    "TAKLER_TIMEOUT": "30",
    "TAKLER_CAFILE": "/etc/ca.pem",
}


def script(tmp_path: Path, text: str, name: str = "t1.takler") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_variables_are_substituted(tmp_path) -> None:
    path = script(tmp_path, "echo {{ GREETING }} {{ N }}\n")
    assert render_job(path, {"GREETING": "hello", "N": "3"}) == "echo hello 3\n"


def test_undefined_variable_names_it_and_the_line(tmp_path) -> None:
    path = script(tmp_path, "echo start\n\necho {{ FOO }}\n")
    with pytest.raises(
        JobRenderError, match=r"^variable 'FOO' is not defined \(t1.takler line 3\)$"
    ):
        render_job(path, {})


def test_undefined_variable_in_an_include_names_the_include(tmp_path) -> None:
    script(tmp_path, "one\n{{ BAR }}\n", name="inc.h")
    path = script(tmp_path, '{% include "inc.h" %}\n')
    with pytest.raises(JobRenderError, match=r"'BAR' is not defined \(inc.h line 2\)"):
        render_job(path, {})


def test_missing_script(tmp_path) -> None:
    with pytest.raises(JobRenderError, match=r"^script not found: .*nope\.takler$"):
        render_job(tmp_path / "nope.takler", {})


def test_missing_include_names_it_and_the_search_path(tmp_path) -> None:
    extra = tmp_path / "inc"
    extra.mkdir()
    path = script(tmp_path, 'a\n{% include "missing.h" %}\n')
    with pytest.raises(JobRenderError) as info:
        render_job(path, {}, include_dirs=[extra])
    message = str(info.value)
    assert "include not found: 'missing.h' (t1.takler line 2)" in message
    assert f"{tmp_path}, {extra}, {default_include_dir()}" in message


def test_syntax_error_names_file_and_line(tmp_path) -> None:
    path = script(tmp_path, "ok\n{% if %}\n")
    with pytest.raises(JobRenderError, match=r"syntax error in t1.takler line 2"):
        render_job(path, {})


def test_ecflow_scripts_are_not_jinja_templates(tmp_path) -> None:
    path = script(tmp_path, "%include <head.h>\n", name="t1.ecf")
    with pytest.raises(JobRenderError, match="ecFlow script"):
        render_job(path, {})


def test_include_search_order(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "common.h").write_text("first {{ X }}\n")
    (second / "common.h").write_text("second\n")
    (second / "only.h").write_text("only second\n")
    path = script(tmp_path, '{% include "common.h" %}{% include "only.h" %}')
    assert render_job(path, {"X": "1"}, include_dirs=[first, second]) == "first 1\nonly second\n"
    (tmp_path / "beside.takler").write_text('{% include "common.h" %}')
    (tmp_path / "common.h").write_text("beside the script\n")
    assert render_job(tmp_path / "beside.takler", {}, include_dirs=[first]) == "beside the script\n"


def test_edited_script_is_picked_up(tmp_path) -> None:
    path = script(tmp_path, "one\n")
    assert render_job(path, {}) == "one\n"
    path.write_text("two\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert render_job(path, {}) == "two\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#!/bin/bash\necho hi\n", "#!/bin/bash\n#SBATCH -n 1\n#SBATCH -t 10\necho hi\n"),
        ("echo hi\n", "#SBATCH -n 1\n#SBATCH -t 10\necho hi\n"),
        ("#!/bin/sh", "#!/bin/sh\n#SBATCH -n 1\n#SBATCH -t 10\n"),
    ],
)
def test_extra_header_goes_after_the_shebang(tmp_path, text, expected) -> None:
    path = script(tmp_path, text)
    assert render_job(path, {}, extra_header=["#SBATCH -n 1", "#SBATCH -t 10"]) == expected


def test_standard_head_and_tail_render_to_valid_bash(tmp_path) -> None:
    path = script(
        tmp_path,
        '{% include "head.takler" %}\necho "{{ TAKLER_NAME }}"\n{% include "tail.takler" %}\n',
    )
    text = render_job(path, JOB_VARIABLES, extra_header=["#SBATCH -n 1"])
    assert text.startswith("#!/bin/bash\n#SBATCH -n 1\nexport TAKLER_HOST=localhost\n")
    assert "export TAKLER_CAFILE=/etc/ca.pem\n" in text
    assert "export TAKLER_TIMEOUT=30\n" in text
    assert "takler_init\n" in text
    assert text.rstrip().endswith("takler_complete\ntrap - ERR EXIT INT TERM HUP XCPU\nexit 0")
    job = tmp_path / "job" / "t1.job1"
    write_job(text, job)
    assert job.read_text() == text
    assert job.stat().st_mode & 0o777 == 0o700
    subprocess.run(["bash", "-n", str(job)], check=True)
    exported = subprocess.run(
        ["bash", "-c", f'eval "$(grep ^export {job})"; printf %s "$TAKLER_PASSWORD"'],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert exported == JOB_VARIABLES["TAKLER_PASSWORD"]


def test_optional_variables_may_be_left_out(tmp_path) -> None:
    path = script(tmp_path, '{% include "head.takler" %}\n{% include "tail.takler" %}\n')
    required = {
        k: v for k, v in JOB_VARIABLES.items() if k not in {"TAKLER_TIMEOUT", "TAKLER_CAFILE"}
    }
    text = render_job(path, required)
    assert "export TAKLER_CAFILE" not in text
    assert "export TAKLER_TIMEOUT" not in text


def test_write_job_replaces_an_existing_file(tmp_path) -> None:
    job = tmp_path / "t1.job1"
    write_job("old\n", job)
    write_job("new\n", job)
    assert job.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t1.job1"]


def test_write_job_in_place_keeps_the_inode_and_makes_it_private(tmp_path) -> None:
    job = tmp_path / "t1.job1"
    job.write_text("an older, longer job\n")
    job.chmod(0o644)
    inode = job.stat().st_ino
    write_job("new\n", job, in_place=True)
    assert job.read_text() == "new\n"
    assert job.stat().st_ino == inode
    assert job.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in tmp_path.iterdir()] == ["t1.job1"]


def test_write_job_in_place_creates_a_missing_file(tmp_path) -> None:
    job = tmp_path / "f" / "t1.job1"
    write_job("new\n", job, in_place=True)
    assert job.read_text() == "new\n"
    assert job.stat().st_mode & 0o777 == 0o700


def test_write_job_replaces_what_is_not_a_plain_file_even_in_place(tmp_path) -> None:
    # A link is replaced, never written through; a FIFO is replaced, never waited on.
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    linked, hard, fifo = tmp_path / "t1.job1", tmp_path / "t2.job1", tmp_path / "t3.job1"
    linked.symlink_to(target)
    os.link(target, hard)
    os.mkfifo(fifo)
    for job in (linked, hard, fifo):
        write_job("new\n", job, in_place=True)
        assert not job.is_symlink() and job.read_text() == "new\n"
    assert target.read_text() == "keep\n"
    assert hard.stat().st_ino != target.stat().st_ino


def test_write_job_under_a_file_says_why(tmp_path) -> None:
    blocker = tmp_path / "plain"
    blocker.write_text("")
    with pytest.raises(JobRenderError, match=r"cannot write job file .*plain/t1\.job1: Not a directory"):
        write_job("x\n", blocker / "t1.job1")


@pytest.mark.parametrize(
    ("text", "name", "why"),
    [
        ("x\n", "", "it names no file"),
        ("x\n", "/", "it names no file"),
        ("echo \ud800\n", "t1.job1", "surrogates not allowed"),
    ],
)
def test_write_job_refuses_what_it_cannot_write(tmp_path, text, name, why) -> None:
    job = Path(name) if name in ("", "/") else tmp_path / name
    with pytest.raises(JobRenderError, match=why):
        write_job(text, job)
    assert list(tmp_path.iterdir()) == []


def test_edited_include_is_picked_up(tmp_path) -> None:
    includes = tmp_path / "inc"
    includes.mkdir()
    header = includes / "common.h"
    header.write_text("one\n")
    path = script(tmp_path, '{% include "common.h" %}{{ include_raw("common.h") }}')
    assert render_job(path, {}, include_dirs=[includes]) == "one\none\n"
    header.write_text("three\n")  # same second, other size
    assert render_job(path, {}, include_dirs=[includes]) == "three\nthree\n"


def test_include_appearing_earlier_in_the_search_path_wins(tmp_path) -> None:
    includes = tmp_path / "inc"
    includes.mkdir()
    (includes / "common.h").write_text("from the include folder\n")
    path = script(tmp_path, '{% include "common.h" %}')
    assert render_job(path, {}, include_dirs=[includes]) == "from the include folder\n"
    (tmp_path / "common.h").write_text("beside the script\n")
    assert render_job(path, {}, include_dirs=[includes]) == "beside the script\n"
    (tmp_path / "common.h").unlink()
    assert render_job(path, {}, include_dirs=[includes]) == "from the include folder\n"
