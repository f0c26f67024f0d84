"""Render a task's Jinja2 script template into its job file.

A takler script is a Jinja2 template: ``{{ NAME }}`` is the task's variable
NAME, ``{% include "head.takler" %}`` pulls in a standard or user include.
Scripts ending in ``.ecf`` are ecFlow scripts: the server hands them to the
ecFlow preprocessor in ``takler.ecflow``, never to :func:`render_job`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import re
import shlex
import stat
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import jinja2
import jinja2.bccache
from jinja2.loaders import split_template_path

from takler.core.errors import TaklerError

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
    if not script.is_file():
        raise JobRenderError(f"script not found: {script}")
    search_path = (
        os.fspath(script.parent),
        *(os.fspath(d) for d in include_dirs),
        os.fspath(default_include_dir()),
    )
    env = _environment(search_path)
    try:
        text = env.get_template(script.name).render(dict(variables))
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


def write_job(text: str, job_file: Path) -> None:
    """Write a job file, executable and private (it holds the job's password),
    replacing any older one in one step.

    The file is replaced rather than rewritten so a still-running previous
    try, which bash reads as it goes, keeps its own copy.

    Raises:
        JobRenderError: the file cannot be written.
    """
    tmp = job_file.with_name(f".{job_file.name}.{os.getpid()}.tmp")
    data = text.encode("utf-8")
    try:
        try:
            fd = os.open(tmp, _JOB_FLAGS, 0o700)
        except FileNotFoundError:  # the first job of its folder
            job_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, _JOB_FLAGS, 0o700)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, job_file)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise JobRenderError(f"cannot write job file {job_file}: {exc.strerror}") from None


_JOB_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


@functools.lru_cache(maxsize=512)
class _SameSourceCache(jinja2.BytecodeCache):
    """Compiled templates shared by every script with the same text.

    Suites often give each task its own script file with the same contents;
    compiling a template costs a few milliseconds, loading the code object a
    few microseconds. The code keeps the file name it is loaded for, so
    errors still name the right script.
    """

    def __init__(self) -> None:
        self._code: dict[str, types.CodeType] = {}

    def get_bucket(
        self, environment: jinja2.Environment, name: str, filename: str | None, source: str
    ) -> jinja2.bccache.Bucket:
        key = hashlib.sha256(source.encode("utf-8")).hexdigest()
        bucket = jinja2.bccache.Bucket(environment, key, key)
        code = self._code.get(key)
        if code is not None and filename is not None:
            bucket.code = _renamed(code, code.co_filename, filename)
        elif code is not None:
            bucket.code = code
        return bucket

    def set_bucket(self, bucket: jinja2.bccache.Bucket) -> None:
        if bucket.code is not None:
            if len(self._code) >= _MAX_CACHED:
                self._code.pop(next(iter(self._code)))
            self._code[bucket.key] = bucket.code

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:  # pragma: no cover
        pass  # get_bucket fills the bucket itself

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:  # pragma: no cover
        pass


_MAX_CACHED = 4096


def _renamed(code: types.CodeType, old: str, new: str) -> types.CodeType:
    if old == new:
        return code
    consts = tuple(
        _renamed(c, old, new) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=new, co_consts=consts)


_BYTECODE = _SameSourceCache()


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    # A file rewritten in place changes size or mtime; one replaced, its inode.
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Loader(jinja2.FileSystemLoader):
    """A FileSystemLoader whose templates stay cached while nothing changes.

    A template found is up to date while its file has the same inode, size,
    mtime and ctime, and no file of that name has appeared in a folder
    searched before its own. The text of each file is kept with that
    signature, so ``include_raw`` of an unchanged file costs one ``stat``.
    """

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)
        found = -1
        for index, folder in enumerate(self.searchpath):
            filename = posixpath.join(folder, *pieces)
            try:
                st = os.stat(filename)
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(st.st_mode):
                found = index
                break
        else:
            paths = ", ".join(repr(p) for p in self.searchpath)
            raise jinja2.TemplateNotFound(template, f"{template!r} not found in {paths}")
        signature = _signature(st)
        contents = _read_text(filename, signature, self.encoding)
        before = [posixpath.join(folder, *pieces) for folder in self.searchpath[:found]]

        def uptodate() -> bool:
            try:
                if _signature(os.stat(filename)) != signature:
                    return False
            except OSError:
                return False
            return not any(os.path.isfile(path) for path in before)

        return contents, os.path.normpath(filename), uptodate


#: file name -> (signature, text) of the template files read last
_TEXTS: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def _read_text(filename: str, signature: tuple[int, int, int, int], encoding: str) -> str:
    cached = _TEXTS.get(filename)
    if cached is not None and cached[0] == signature:
        return cached[1]
    with open(filename, encoding=encoding) as f:
        contents = f.read()
    if len(_TEXTS) >= _MAX_CACHED:
        _TEXTS.pop(next(iter(_TEXTS)))
    _TEXTS[filename] = (signature, contents)
    return contents


@functools.lru_cache(maxsize=64)
def _environment(search_path: tuple[str, ...]) -> jinja2.Environment:
    """The environment of one search path, kept: its templates stay compiled
    and are loaded again when their file changes (``auto_reload``)."""
    env = jinja2.Environment(
        loader=_Loader(list(search_path)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=True,
        # Includes are looked up by every render: keep the LRU short (Jinja's
        # moves a hit up by a linear search). Scripts compiled once are
        # shared through the bytecode cache anyway.
        cache_size=50,
        bytecode_cache=_BYTECODE,
    )
    env.filters["shquote"] = _shquote
    env.globals["include_raw"] = _include_raw
    return env


def _shquote(value: object) -> str:
    return shlex.quote(str(value))


@jinja2.pass_environment
def _include_raw(env: jinja2.Environment, name: str) -> str:
    # For bash files that are also sourced as-is: ${#x} would open a Jinja comment.
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    return source


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
