"""ecFlow's own parser test data: good files load (or are refused by feature), bad ones fail.

Also: the round trip .def -> flows -> .def -> flows is stable, and, where
ecFlow's Python module is installed, ecFlow accepts what export_def writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from takler.core.errors import DefinitionError, UnsupportedFeatureError
from takler.ecflow import export_def, flows_from_def, flows_from_def_file


def _corpus() -> Path | None:
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[2].parent / "shared" / "ecflow-defs",
        Path("/work/shared/ecflow-defs"),
    ):
        if (candidate / "good_defs").is_dir():
            return candidate
    return None


CORPUS = _corpus()
pytestmark = pytest.mark.skipif(
    CORPUS is None, reason="shared/ecflow-defs is not beside the repository"
)


def _files(kind: str) -> list[str]:
    if CORPUS is None:
        return []
    root = CORPUS / kind
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


#: Good files takler refuses, and the feature the refusal must name.
REFUSED_GOOD = {
    "autoarchive/autoarchive.def": "autoarchive",
    "autoarchive/autoarchive2.def": "autoarchive",
    "autorestore/autorestore2.def": "autorestore",
    "autorestore/autorestore_test.def": "autoarchive",
    "cron/cron.def": "relative cron",
    "generic/generic.def": "generic",
    "mirror/mirror.def": "mirror",
    "queue/queue.def": "queue",
    "queue/queue2.def": "queue",
    "queue/queue_string.def": "queue",
    "repeat/repeat_datetime.def": "repeat datetime",
    "trigger/all_trigger_examples.def": "parent-variable references",
    "trigger/complex_hier.def": "node flags",
    "trigger/complex_trigger.txt": "parent-variable references",
    "trigger/late.def": "node flags",
    "variable/alias.def": "alias",
    "zombie/zombie.def": "zombie",
}


@pytest.mark.parametrize("name", _files("good_defs"))
def test_good_file_loads_or_names_the_refused_feature(name: str) -> None:
    assert CORPUS is not None
    path = CORPUS / "good_defs" / name
    if name in REFUSED_GOOD:
        with pytest.raises(UnsupportedFeatureError, match=rf":\d+: {REFUSED_GOOD[name]}"):
            flows_from_def_file(path)
    else:
        assert flows_from_def_file(path)


@pytest.mark.parametrize("name", _files("bad_defs"))
def test_bad_file_is_refused_with_a_line(name: str) -> None:
    assert CORPUS is not None
    with pytest.raises(DefinitionError) as info:
        flows_from_def_file(CORPUS / "bad_defs" / name)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{CORPUS / 'bad_defs' / name}:")
    line = message[len(str(CORPUS / "bad_defs" / name)) + 1 :].split(":", 1)[0]
    assert line.isdigit()


def _loadable() -> list[str]:
    return [n for n in _files("good_defs") if n not in REFUSED_GOOD]


@pytest.mark.parametrize("name", _loadable())
def test_round_trip_is_stable(name: str) -> None:
    assert CORPUS is not None
    first = export_def(flows_from_def_file(CORPUS / "good_defs" / name))
    second = export_def(flows_from_def(first, "first"))
    assert second == first
    stated = export_def(flows_from_def(first, "first"), with_state=True)
    assert export_def(flows_from_def(stated, "stated")) == first


_ECFLOW_PYTHON = "/usr/bin/python3"


def _has_ecflow() -> bool:
    if shutil.which(_ECFLOW_PYTHON) is None:
        return False
    done = subprocess.run([_ECFLOW_PYTHON, "-c", "import ecflow"], capture_output=True, check=False)
    return done.returncode == 0


_CHECK = textwrap.dedent(
    """
    import json, sys, ecflow
    failures = {}
    for path in sys.argv[1:]:
        try:
            defs = ecflow.Defs(path)
            problem = defs.check()
            if problem and "Error" in problem:
                failures[path] = problem
        except Exception as e:
            failures[path] = str(e)
    print(json.dumps(failures))
    """
)


def test_ecflow_accepts_what_export_def_writes(tmp_path: Path) -> None:
    if not _has_ecflow():
        pytest.skip("ecFlow's Python module (python3-ecflow) is not installed")
    assert CORPUS is not None
    paths = []
    for index, name in enumerate(_loadable()):
        flows = flows_from_def_file(CORPUS / "good_defs" / name)
        for with_state in (False, True):
            out = tmp_path / f"{index}_{int(with_state)}.def"
            out.write_text(export_def(flows, with_state=with_state))
            paths.append(str(out))
    done = subprocess.run(
        [_ECFLOW_PYTHON, "-c", _CHECK, *paths],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
