"""The Jinja2 side of :func:`takler.tasks.render.render_job`: environments,
the loader and the caches that keep compiled templates between renders.

Imported by the first render, so a server that starts pays for Jinja2 only
when it renders a job.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import shlex
import stat
import types
from collections.abc import Callable

import jinja2
import jinja2.bccache
from jinja2.loaders import split_template_path


def script_template(search_path: tuple[str, ...], name: str) -> jinja2.Template:
    """The compiled template of script ``name``, the first found on ``search_path``.

    Kept while up to date, outside the environment's own cache: each task
    usually has a script of its own, and thousands of them would push the
    includes (head, tail) out of that short LRU, each render then loading
    its script again.

    Raises:
        jinja2.TemplateError: as :meth:`jinja2.Environment.get_template`.
    """
    key = (search_path, name)
    template = _SCRIPTS.get(key)
    if template is not None and template.is_up_to_date:
        return template
    env = _environment(search_path)
    assert env.loader is not None
    template = env.loader.load(env, name, env.make_globals(None))
    if key not in _SCRIPTS and len(_SCRIPTS) >= _MAX_CACHED:
        _SCRIPTS.pop(next(iter(_SCRIPTS)))
    _SCRIPTS[key] = template
    return template


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


#: (search path, script name) -> compiled template, see script_template
_SCRIPTS: dict[tuple[tuple[str, ...], str], jinja2.Template] = {}
