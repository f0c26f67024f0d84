"""ecFlow's script pre-processor: turn a task's ``.ecf`` file into job text.

Directives start a line with the micro character (``%`` unless ``ECF_MICRO``
or ``%ecfmicro`` changes it):

* ``%include <f>``: the first of ``include_dirs/f``, then ``home/f``;
  ``%include "f"``: ``home/SUITE/FAMILY/f``, then beside the including file;
  ``%include f``: ``f`` itself (relative to the including file).
  ``%includenopp`` includes the file verbatim; ``%includeonce`` skips a file
  already included.
* ``%comment`` / ``%manual`` ... ``%end``: dropped from the job.
* ``%nopp`` ... ``%end``: copied verbatim, no variable substitution.
* ``%ecfmicro C``: ``C`` is the micro character from the next line on.

Everywhere else ``%VAR%`` is replaced by the variable's value,
``%VAR:default%`` by the value or ``default``, and ``%%`` by ``%``. An
undefined variable, an unpaired ``%`` (outside a shell comment: ``# 50%`` is
text, as in ecFlow) or a missing include stops with a :class:`ScriptError`
naming the file and line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from takler.core.errors import TaklerError

_MAX_DEPTH = 50


class ScriptError(TaklerError, ValueError):
    """A script cannot be pre-processed; the message names the file and line."""

    code = "bad_script"


class _State:
    def __init__(
        self, variables: Mapping[str, str], include_dirs: Sequence[Path], home: Path | None
    ) -> None:
        self.variables = variables
        self.include_dirs = list(include_dirs)
        self.home = home
        self.micro = str(variables.get("ECF_MICRO") or "%")[:1]
        self.included: set[Path] = set()
        self.out: list[str] = []


def _fail(path: Path, line: int, what: str) -> ScriptError:
    return ScriptError(f"{path}:{line}: {what}")


def substitute(text: str, variables: Mapping[str, str], micro: str = "%") -> str:
    """``text`` with ``%VAR%``, ``%VAR:default%`` and ``%%`` replaced.

    Raises:
        ScriptError: an undefined variable or an unpaired micro character
            (the message has no file or line; :func:`preprocess_ecf` adds them).
    """
    out: list[str] = []
    pos = 0
    while True:
        start = text.find(micro, pos)
        if start == -1:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:start])
        if text.startswith(micro, start + 1):
            out.append(micro)
            pos = start + 2
            continue
        end = text.find(micro, start + 1)
        if end == -1:
            if "#" in text[:start]:
                # As ecFlow: a lone micro character in a shell comment is text.
                out.append(text[start:])
                return "".join(out)
            raise ScriptError(f"unpaired {micro} at column {start + 1}")
        name, sep, default = text[start + 1 : end].partition(":")
        value = variables.get(name)
        if value is None:
            if not sep:
                raise ScriptError(f"undefined variable {micro}{name}{micro}")
            value = default
        out.append(str(value))
        pos = end + 1


def _family_dir(state: _State) -> Path | None:
    if state.home is None:
        return None
    suite = state.variables.get("SUITE")
    family = state.variables.get("FAMILY")
    if suite is None:
        name = state.variables.get("ECF_NAME") or state.variables.get("TAKLER_NAME") or ""
        parts = [p for p in str(name).split("/") if p]
        if len(parts) < 2:
            return None
        suite, family = parts[0], "/".join(parts[1:-1])
    return state.home / str(suite) / str(family or "")


def _locate(state: _State, spec: str, here: Path, line: int) -> Path:
    spec = spec.strip()
    if spec.startswith("<") and spec.endswith(">"):
        name = spec[1:-1].strip()
        candidates = [d / name for d in state.include_dirs]
        if state.home is not None:
            candidates.append(state.home / name)
    elif len(spec) >= 2 and spec[0] == spec[-1] == '"':
        name = spec[1:-1].strip()
        family = _family_dir(state)
        candidates = ([family / name] if family is not None else []) + [here.parent / name]
    else:
        name = spec
        candidates = [Path(name) if Path(name).is_absolute() else here.parent / name]
    if not name:
        raise _fail(here, line, "include without a file name")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise _fail(here, line, f"include {spec}: file not found (tried {tried})")


def _read(path: Path, here: Path | None, line: int) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        where = f"{here}:{line}" if here is not None else str(path)
        raise ScriptError(f"{where}: cannot read {path}: {e.strerror or e}") from None


def _directive(line: str, micro: str) -> tuple[str, str] | None:
    stripped = line.lstrip()
    if not stripped.startswith(micro) or stripped.startswith(micro * 2):
        return None
    word, _, rest = stripped[1:].partition(" ")
    word = word.strip()
    known = (
        "include",
        "includenopp",
        "includeonce",
        "comment",
        "manual",
        "nopp",
        "end",
        "ecfmicro",
    )
    return (word, rest.strip()) if word in known else None


def _process(state: _State, path: Path, depth: int) -> None:
    lines = _read(path, None, 0)
    block: tuple[str, int] | None = None
    for number, line in enumerate(lines, start=1):
        directive = _directive(line, state.micro)
        if block is not None:
            if directive is not None and directive[0] == "end":
                block = None
            elif block[0] == "nopp":
                state.out.append(line)
            continue
        if directive is None:
            try:
                state.out.append(substitute(line, state.variables, state.micro))
            except ScriptError as e:
                raise _fail(path, number, str(e)) from None
            continue
        word, rest = directive
        if word in ("comment", "manual", "nopp"):
            block = (word, number)
        elif word == "end":
            raise _fail(
                path, number, f"{state.micro}end without {state.micro}comment, manual or nopp"
            )
        elif word == "ecfmicro":
            if len(rest) != 1:
                raise _fail(path, number, "ecfmicro takes one character")
            state.micro = rest
        else:
            _include(state, word, rest, path, number, depth)
    if block is not None:
        raise _fail(path, block[1], f"{state.micro}{block[0]} without {state.micro}end")


def _include(state: _State, word: str, spec: str, here: Path, number: int, depth: int) -> None:
    try:
        spec = substitute(spec, state.variables, state.micro)
    except ScriptError as e:
        raise _fail(here, number, str(e)) from None
    target = _locate(state, spec, here, number)
    key = target.resolve()
    if word == "includeonce" and key in state.included:
        return
    state.included.add(key)
    if word == "includenopp":
        state.out.extend(_read(target, here, number))
        return
    if depth >= _MAX_DEPTH:
        raise _fail(here, number, f"includes nested deeper than {_MAX_DEPTH} (an include loop?)")
    _process(state, target, depth + 1)


def preprocess_ecf(
    script: Path,
    variables: Mapping[str, str],
    include_dirs: Sequence[Path],
    home: Path | None,
) -> str:
    """The job text of an ecFlow ``.ecf`` script.

    Args:
        script: the ``.ecf`` file.
        variables: every variable visible to the task (ECF_* names included).
        include_dirs: where ``%include <f>`` looks first (ECF_INCLUDE, in order).
        home: ECF_HOME, searched after ``include_dirs`` and for ``"f"`` includes.

    Raises:
        ScriptError: ``<file>:<line>: <what>`` for an undefined variable, an
            unpaired micro character, a missing include or an unclosed block.
    """
    state = _State(variables, include_dirs, home)
    _process(state, Path(script), 0)
    return "\n".join(state.out) + "\n"


def find_ecf_script(task_path: str, variables: Mapping[str, str]) -> Path | None:
    """Where ecFlow would find the script of the task at ``task_path``.

    In order: ``ECF_SCRIPT``; then under ``ECF_FILES`` the task path with its
    leading parts dropped one by one (``/o/12/fc/model`` tries
    ``o/12/fc/model.ecf``, ``12/fc/model.ecf``, ``fc/model.ecf``,
    ``model.ecf``); then the same under ``ECF_HOME``. The extension is
    ``ECF_EXTN`` (default ``.ecf``). TAKLER_HOME and TAKLER_FILES stand in
    for ECF_HOME and ECF_FILES. Returns None when no file exists.
    """
    script = variables.get("ECF_SCRIPT")
    if script and Path(script).is_file():
        return Path(script)
    extension = variables.get("ECF_EXTN") or ".ecf"
    parts = [p for p in task_path.split("/") if p]
    if not parts:
        return None
    for names in (("ECF_FILES", "TAKLER_FILES"), ("ECF_HOME", "TAKLER_HOME")):
        root = next((variables[n] for n in names if variables.get(n)), None)
        if root is None:
            continue
        for skip in range(len(parts)):
            candidate = Path(root, *parts[skip:-1], parts[-1] + extension)
            if candidate.is_file():
                return candidate
    return None
