"""The ecFlow pre-processor: includes, blocks, micro character, variables, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from takler.ecflow import ScriptError, find_ecf_script, preprocess_ecf
from takler.ecflow.preprocess import substitute


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(script: Path, home: Path, variables: dict[str, str] | None = None, includes=()) -> str:  # type: ignore[no-untyped-def]
    return preprocess_ecf(script, variables or {}, list(includes), home)


def test_variables_defaults_and_escapes() -> None:
    assert substitute("a %X% b %Y:def% c %%d", {"X": "1"}) == "a 1 b def c %d"
    assert substitute("%Y:%", {"Y": "set"}) == "set"
    assert substitute("date +%%Y.%%m", {}) == "date +%Y.%m"


def test_include_forms(tmp_path: Path, home: Path) -> None:
    inc = tmp_path / "inc"
    write(inc / "head.h", "head %TASK%")
    write(home / "tail.h", "tail")  # <f> falls back to home
    write(home / "s" / "f" / "local.h", "local")  # "f" is home/SUITE/FAMILY/f
    absolute = write(tmp_path / "abs.h", "absolute")
    script = write(
        home / "s" / "f" / "t.ecf",
        f'%include <head.h>\n%include "local.h"\n%include {absolute}\nbody\n%include <tail.h>\n',
    )
    variables = {"TASK": "t", "ECF_NAME": "/s/f/t"}
    assert run(script, home, variables, [inc]) == "head t\nlocal\nabsolute\nbody\ntail\n"


def test_include_searches_include_dirs_in_order(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "a" / "x.h", "from a")
    write(tmp_path / "b" / "x.h", "from b")
    script = write(home / "t.ecf", "%include <x.h>\n")
    assert run(script, home, includes=[tmp_path / "a", tmp_path / "b"]) == "from a\n"
    assert run(script, home, includes=[tmp_path / "b", tmp_path / "a"]) == "from b\n"


def test_includenopp_and_includeonce(home: Path) -> None:
    write(home / "raw.h", "keep %NOT_A_VAR% as is")
    write(home / "once.h", "once")
    script = write(
        home / "t.ecf", "%includenopp <raw.h>\n%includeonce <once.h>\n%includeonce <once.h>\n"
    )
    assert run(script, home) == "keep %NOT_A_VAR% as is\nonce\n"


def test_comment_manual_and_nopp_blocks(home: Path) -> None:
    script = write(
        home / "t.ecf",
        "%comment\nnot %A% here\n%end\n%manual\nread me\n%end\n%nopp\nraw %A% 50%\n%end\nv=%A%\n",
    )
    assert run(script, home, {"A": "1"}) == "raw %A% 50%\nv=1\n"


def test_ecfmicro_changes_the_directive_character(home: Path) -> None:
    write(home / "h.h", "in @X@ and 100%")
    script = write(
        home / "t.ecf", "%ecfmicro @\n@include <h.h>\nprintf '%d' @X@\n@ecfmicro %\n%X%\n"
    )
    assert run(script, home, {"X": "7"}) == "in 7 and 100%\nprintf '%d' 7\n7\n"


def test_undefined_variable_names_file_and_line(home: Path) -> None:
    script = write(home / "t.ecf", "ok\necho %MISSING%\n")
    with pytest.raises(ScriptError, match=rf"{script}:2: undefined variable %MISSING%"):
        run(script, home)


def test_unpaired_micro_names_the_line_of_the_include(home: Path) -> None:
    inc = write(home / "bad.h", "fine\n50% done\n")
    script = write(home / "t.ecf", "%include <bad.h>\n")
    with pytest.raises(ScriptError, match=rf"{inc}:2: unpaired %"):
        run(script, home)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("%include <nope.h>\n", r":1: include <nope.h>: file not found"),
        ("a\n%comment\nb\n", r":2: %comment without %end"),
        ("%end\n", r":1: %end without"),
        ("%ecfmicro ab\n", r":1: ecfmicro takes one character"),
        ("%include <self.ecf>\n", r"nested deeper"),
    ],
)
def test_structural_errors(home: Path, text: str, pattern: str) -> None:
    script = write(home / "self.ecf", text)
    with pytest.raises(ScriptError, match=pattern):
        run(script, home)


def test_find_ecf_script_order(tmp_path: Path) -> None:
    files, home = tmp_path / "files", tmp_path / "home"
    explicit = write(tmp_path / "x.ecf", "")
    assert find_ecf_script("/o/12/fc/model", {"ECF_SCRIPT": str(explicit)}) == explicit
    variables = {"ECF_FILES": str(files), "ECF_HOME": str(home)}
    assert find_ecf_script("/o/12/fc/model", variables) is None
    in_home = write(home / "o" / "12" / "fc" / "model.ecf", "")
    assert find_ecf_script("/o/12/fc/model", variables) == in_home
    pruned = write(files / "fc" / "model.ecf", "")
    assert find_ecf_script("/o/12/fc/model", variables) == pruned
    deepest = write(files / "12" / "fc" / "model.ecf", "")
    assert find_ecf_script("/o/12/fc/model", variables) == deepest
    assert find_ecf_script("/o/12/fc/model", {"TAKLER_HOME": str(home)}) == in_home


def test_find_ecf_script_uses_ecf_extn(tmp_path: Path) -> None:
    script = write(tmp_path / "s" / "t.py", "")
    assert find_ecf_script("/s/t", {"ECF_HOME": str(tmp_path), "ECF_EXTN": ".py"}) == script
