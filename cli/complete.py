"""Shell completion of node paths: asks the server, quietly, and gives up fast."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import typer

#: completion must not hang a shell: seconds to wait for the server
COMPLETION_TIMEOUT = 2.0


def complete_path(ctx: typer.Context, incomplete: str) -> list[str]:
    """Node paths starting with ``incomplete``, from the server the command line names."""
    import trio

    from takler_cli.connect import Conn

    params = ctx.params
    conn = Conn(
        host=params.get("host"),
        port=params.get("port"),
        home=params.get("home"),
        token=params.get("token"),
        cafile=params.get("cafile"),
    )

    async def fetch() -> Any:
        with trio.move_on_after(COMPLETION_TIMEOUT):
            async with conn.open(timeout=COMPLETION_TIMEOUT) as client:
                return await client.call("show")
        return None

    try:
        data = trio.run(fetch)
    except BaseException:  # completion must never print a traceback into the shell
        return []
    if not isinstance(data, Mapping):
        return []
    prefix = "/" + incomplete.lstrip("/") if incomplete else "/"
    return [p for p in node_paths(data) if p.startswith(prefix)][:500]


def node_paths(data: Mapping[str, Any]) -> Iterator[str]:
    """Every node path in a bunch dump, parents first."""
    stack = [(f, "/" + f["name"]) for f in reversed(data.get("flows", []))]
    while stack:
        node, path = stack.pop()
        yield path
        stack.extend((c, f"{path}/{c['name']}") for c in reversed(node.get("children") or []))
