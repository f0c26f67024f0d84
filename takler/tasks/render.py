"""Render a task's Jinja2 script template into its job file.

A takler script is a Jinja2 template: ``{{ NAME }}`` is the task's variable
NAME, ``{% include "head.takler" %}`` pulls in a standard or user include.
Scripts ending in ``.ecf`` are ecFlow scripts: the server hands them to the
ecFlow preprocessor in ``takler.ecflow``, never to :func:`render_job`.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from takler.core.errors import TaklerError

# Jinja2 is imported by the first render (takler.tasks.engine), not here: the
# server imports this module at start for job_bin_dir, and Jinja2 costs a
# tenth of a second to import.

_PACKAGE_DIR = Path(__file__).resolve().parent
_UNDEFINED = re.compile(r"^'([^']+)' is undefined$")


class JobRenderError(TaklerError, ValueError):
    """A script cannot be rendered into a job: missing file, include or variable."""

    code = "render_failed"


def default_include_dir() -> Path:
    """The folder holding the standard includes (head, tail, child)."""
    return _PACKAGE_DIR / "include"


def job_bin_dir() -> Path:
    """The folder the server prepends to a job's PATH (holds ``ecflow_client``)."""
    return _PACKAGE_DIR / "bin"


def render_job(
    script: Path,
    variables: Mapping[str, str],
    include_dirs: Sequence[Path] = (),
    extra_header: Sequence[str] = (),
) -> str:
    """Render a Jinja2 task script into the text of its job file.

    Includes are searched in the script's folder, then ``include_dirs`` in
    order, then :func:`default_include_dir`. Compiled templates are cached and
    reloaded when their file changes.

    Args:
        script: the task's script template (``TAKLER_SCRIPT``).
        variables: the task's variables, available as ``{{ NAME }}``.
        include_dirs: extra include folders (``TAKLER_INCLUDE`` split on ``:``).
        extra_header: lines (such as ``#SBATCH`` directives) placed right after
            the shebang line, or at the top when there is none.

    Returns:
        The job text.

    Raises:
        JobRenderError: the script or an include is missing, a variable is not
            defined, or the template is malformed; the message names the file
            and line.
    """
    if script.suffix == ".ecf":
        raise JobRenderError(f"{script} is an ecFlow script: render it with takler.ecflow")
    if not os.path.isfile(script):
        raise JobRenderError(f"script not found: {script}")
    import jinja2

    from takler.tasks.engine import script_template

    search_path = (
        os.fspath(script.parent),
        *(os.fspath(d) for d in include_dirs),
        os.fspath(default_include_dir()),
    )
    try:
        text = script_template(search_path, script.name).render(dict(variables))
    except jinja2.TemplateSyntaxError as exc:
        where = Path(exc.filename).name if exc.filename else exc.name or script.name
        raise JobRenderError(f"syntax error in {where} line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise JobRenderError(
            f"include not found: {exc.name!r}{_where(exc.__traceback__)}"
            f" (searched {', '.join(search_path)})"
        ) from None
    except jinja2.UndefinedError as exc:
        match = _UNDEFINED.match(exc.message or "")
        what = f"variable {match[1]!r} is not defined" if match else str(exc.message)
        raise JobRenderError(f"{what}{_where(exc.__traceback__)}") from None
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise JobRenderError(f"cannot render {script}: {exc}{_where(exc.__traceback__)}") from None
    except OSError as exc:
        raise JobRenderError(f"cannot read {exc.filename or script}: {exc.strerror}") from None
    return _insert_header(text, extra_header) if extra_header else text


def write_job(text: str, job_file: Path, in_place: bool = False) -> None:
    """Write a job file, executable and private (it holds the job's password).

    By default an older file is replaced in one step (a new file renamed over
    it), so a still-running previous job, which bash reads as it goes, keeps
    its own copy. With ``in_place``, which the caller gives when it knows no
    job runs from this file, an existing regular file is rewritten instead,
    as ecFlow writes its job files: the same inode, none allocated and none
    freed. On a file system without a journal, ext4 passes over every inode
    freed in the last minutes before it reuses one, so a server that
    replaced a file per job made each new one slower to create (0.5-1.4 ms
    of kernel time per job after a few thousand jobs).

    Raises:
        JobRenderError: the file cannot be written.
    """
    if not job_file.name:
        raise JobRenderError(f"cannot write job file {str(job_file)!r}: it names no file")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JobRenderError(f"cannot write job file {job_file}: {exc.reason}") from None
    if in_place and _rewrite(data, job_file):
        return
    tmp = job_file.with_name(f".{job_file.name}.{os.getpid()}.tmp")
    try:
        try:
            fd = os.open(tmp, _JOB_FLAGS, 0o700)
        except FileNotFoundError:  # the first job of its folder
            job_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, _JOB_FLAGS, 0o700)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, job_file)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a folder that is not one cannot hold it either
            tmp.unlink(missing_ok=True)
        raise JobRenderError(f"cannot write job file {job_file}: {exc.strerror}") from None


def _rewrite(data: bytes, job_file: Path) -> bool:
    """Rewrite ``job_file`` in place if it is a regular file of one link;
    False when it is not there or is something else (a link, a FIFO...)."""
    try:
        fd = os.open(job_file, _REWRITE_FLAGS)
    except OSError:
        return False  # not there (or a symbolic link, or a FIFO nobody reads): replace it
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return False
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
        # Over the old text, then cut to length: a job of the same task is
        # about as long as the last, so no block is freed and allocated again
        # (truncating to 0 first cost as much as the write, on a disk mounted
        # with discard).
        _write_all(fd, data)
        if info.st_size > len(data):
            os.ftruncate(fd, len(data))
    except OSError as exc:
        raise JobRenderError(f"cannot write job file {job_file}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_JOB_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
# Not truncated at open: a hard-linked file is left alone.
_REWRITE_FLAGS = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def _where(tb: TracebackType | None) -> str:
    """` (file line N)` for the innermost template frame of a traceback, if any."""
    where = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.endswith(".py") and not filename.startswith("<"):
            where = f" ({Path(filename).name} line {tb.tb_lineno})"
        tb = tb.tb_next
    return where


def _insert_header(text: str, lines: Sequence[str]) -> str:
    header = "".join(f"{line}\n" for line in lines)
    if text.startswith("#!"):
        first, newline, rest = text.partition("\n")
        return f"{first}\n{header}{rest}" if newline else f"{first}\n{header}"
    return header + text
