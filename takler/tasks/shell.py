"""ShellScriptTask: a task whose job is a rendered shell script."""

from __future__ import annotations

from pathlib import Path

from takler.core.node import Task


class ShellScriptTask(Task):
    """A task whose ``TAKLER_SCRIPT`` is a Jinja2 template rendered into its job.

    Args:
        name: the task's name.
        script_path: sets ``TAKLER_SCRIPT``; otherwise the script is found at
            ``<TAKLER_FILES or TAKLER_HOME>/<task path>.takler``.
    """

    def __init__(self, name: str, script_path: str | Path | None = None) -> None:
        super().__init__(name)
        if script_path is not None:
            self.add_parameter("TAKLER_SCRIPT", Path(script_path))
