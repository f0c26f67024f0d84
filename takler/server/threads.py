"""Blocking calls in worker threads, for the server's hot paths.

:func:`trio.to_thread.run_sync` names the worker thread after the calling
task for each call and back again (two ``pthread_setname_np``, each a write
to ``/proc``), copies the context and checks a run-local limiter. The server
makes a call per job file and per store write, and needs none of that:
:func:`run_sync` keeps the same thread cache and the same default limiter,
and like ``run_sync`` without ``abandon_on_cancel`` it always waits for the
call to end (a cancel takes effect after it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a worker thread; return its result or raise its error."""
    limiter = trio.to_thread.current_default_thread_limiter()
    task = trio.lowlevel.current_task()
    await limiter.acquire_on_behalf_of(task)
    try:
        token = trio.lowlevel.current_trio_token()

        def deliver(result: Any) -> None:  # an outcome.Outcome
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        trio.lowlevel.start_thread_soon(lambda: fn(*args), deliver)
        # Not abandoned on cancel: the call must not outlive the caller's view of it.
        result: T = await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        return result
    finally:
        limiter.release_on_behalf_of(task)


def _refuse_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED
