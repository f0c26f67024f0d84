"""Run ecFlow suites on takler: .def files in and out, .ecf scripts, ECF_* variables."""

from takler.ecflow.defs import flows_from_def, flows_from_def_file
from takler.ecflow.export import export_def
from takler.ecflow.preprocess import ScriptError, find_ecf_script, preprocess_ecf
from takler.ecflow.variables import ECF_TO_TAKLER, ecflow_aliases, takler_settings

__all__ = [
    "ECF_TO_TAKLER",
    "ScriptError",
    "ecflow_aliases",
    "export_def",
    "find_ecf_script",
    "flows_from_def",
    "flows_from_def_file",
    "preprocess_ecf",
    "takler_settings",
]
