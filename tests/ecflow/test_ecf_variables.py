"""The ECF_* <-> TAKLER_* variable mapping."""

from takler.ecflow import ECF_TO_TAKLER, ecflow_aliases, takler_settings


def test_generated_values_get_their_ecflow_names() -> None:
    out = ecflow_aliases(
        {
            "TAKLER_NAME": "/s/f1/f2/t",
            "TAKLER_PASSWORD": "pw",
            "TAKLER_TRYNO": 2,
            "TAKLER_RID": "123",
            "TAKLER_JOB": "/h/s/f1/f2/t.job2",
            "TAKLER_JOBOUT": "/h/s/f1/f2/t.2",
            "FLOW": "s",
            "FAMILY": "f2",
        }
    )
    assert out["ECF_NAME"] == "/s/f1/f2/t"
    assert out["ECF_PASS"] == "pw"
    assert out["ECF_TRYNO"] == "2"
    assert out["ECF_RID"] == "123"
    assert out["ECF_JOB"] == "/h/s/f1/f2/t.job2"
    assert out["ECF_JOBOUT"] == "/h/s/f1/f2/t.2"
    assert out["SUITE"] == "s"
    assert out["FAMILY"] == "f1/f2" and out["FAMILY1"] == "f2"
    assert out["TAKLER_PASSWORD"] == "pw"  # both names stay defined


def test_an_ecf_value_already_set_is_kept() -> None:
    assert ecflow_aliases({"TAKLER_HOME": "/t", "ECF_HOME": "/e"})["ECF_HOME"] == "/e"


def test_settable_ecf_names_map_onto_takler_names() -> None:
    out = takler_settings(
        {
            "ECF_HOME": "/h",
            "ECF_TRIES": "3",
            "ECF_NAME": "/x",
            "TAKLER_FILES": "/f",
            "ECF_FILES": "/e",
            "ECF_OUT": "/o",
        }
    )
    assert out["TAKLER_OUT"] == "/o"
    assert out["TAKLER_HOME"] == "/h" and out["TAKLER_TRIES"] == "3"
    assert "TAKLER_NAME" not in out  # generated: a .def cannot set it
    assert out["TAKLER_FILES"] == "/f"  # an explicit TAKLER_* value wins
    assert out["ECF_HOME"] == "/h"


def test_table_covers_the_documented_names() -> None:
    for name in ("ECF_HOME", "ECF_FILES", "ECF_INCLUDE", "ECF_TRIES", "ECF_JOB_CMD", "ECF_KILL_CMD",
                 "ECF_NAME", "ECF_PASS", "ECF_TRYNO", "ECF_RID", "ECF_JOB", "ECF_JOBOUT"):  # fmt: skip
        assert ECF_TO_TAKLER[name].startswith("TAKLER_")
