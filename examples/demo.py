"""The demo flow of ``takler demo``, for ``takler serve examples/demo.py --begin``.

``create_flow`` receives the server's home and writes the task scripts there.
"""

from pathlib import Path

from takler import demo
from takler.core import Flow


def create_flow(home: Path) -> Flow:
    return demo.create_flow(home)
