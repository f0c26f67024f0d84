"""Fixtures shared by the test folders: a reachable Slurm cluster, or a clear
skip; no job left running after its test."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _no_stray_jobs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Kill the processes a test left running from its ``tmp_path``.

    Jobs outlive their server by design and retry their child commands for a
    day (TAKLER_TIMEOUT): one whose server a test stopped before it answered
    would otherwise linger, and could reach a later test's server on a
    reused port.
    """
    if "tmp_path" not in request.fixturenames:
        yield
        return
    mark = str(request.getfixturevalue("tmp_path")).encode() + b"/"
    yield
    ours = os.getpgrp()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if mark not in (entry / "cmdline").read_bytes():
                continue
            pid = int(entry.name)
            group = os.getpgid(pid)
            # A job leads its own session; never signal the test run's group.
            if group != ours:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
