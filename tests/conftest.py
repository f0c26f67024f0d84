"""Fixtures shared by the test folders: a reachable Slurm cluster, or a clear skip."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_HOW = 'start one with: eval "$(scripts/local-slurm.sh start)"'


def _unusable() -> str | None:
    missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(c) is None]
    if missing:
        return f"Slurm commands not on PATH: {', '.join(missing)}; {_HOW}"
    try:
        proc = subprocess.run(
            ["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return f"squeue did not answer within 30 s; {_HOW}"
    if proc.returncode != 0:
        line = (proc.stderr.strip().splitlines() or ["no message"])[0]
        return (
            f"squeue fails ({line}); SLURM_CONF={os.environ.get('SLURM_CONF', '(unset)')}; {_HOW}"
        )
    return None


@pytest.fixture(scope="session")
def slurm_env() -> None:
    """Skip unless Slurm answers; with TAKLER_REQUIRE_SLURM=1, fail instead (for CI)."""
    reason = _unusable()
    if reason is None:
        return
    if os.environ.get("TAKLER_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)
