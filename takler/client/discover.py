"""Finding the server: explicit arguments, then TAKLER_* variables, then ``server.json``.

A server writes ``<home>/server.json`` (mode 0600) with its address and the
owner token; ``home`` is the argument, else ``$TAKLER_HOME``, else
``~/.takler``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from takler.client.client import UnreachableError
from takler.core.errors import InvalidValueError

DEFAULT_HOST = "127.0.0.1"
_WILDCARDS = ("", "0.0.0.0", "::")


@attrs.frozen
class ServerAddress:
    """Where a server listens and how to talk to it."""

    host: str
    port: int
    token: str | None = attrs.field(default=None, repr=False)
    cafile: str | None = None
    tls: bool = False


def takler_home(home: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The takler home: ``home``, else ``$TAKLER_HOME``, else ``~/.takler``."""
    env = os.environ if environ is None else environ
    if home is not None:
        return Path(home).expanduser()
    if env.get("TAKLER_HOME"):
        return Path(env["TAKLER_HOME"]).expanduser()
    return Path.home() / ".takler"


def _server_file(home: Path) -> dict[str, Any]:
    try:
        data = json.loads((home / "server.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_server(
    home: str | Path | None = None,
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
    cafile: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ServerAddress:
    """Resolve the server's address: arguments beat TAKLER_HOST/PORT/TOKEN/CAFILE,
    which beat ``<home>/server.json``.

    The file's token is used only for the server the file describes, so it
    never goes to another host.

    Raises:
        UnreachableError: no port anywhere (no server file and no TAKLER_PORT).
        InvalidValueError: TAKLER_PORT is not a number.
    """
    env = os.environ if environ is None else environ
    home_path = takler_home(home, env)
    data = _server_file(home_path)
    file_host = data.get("host") if isinstance(data.get("host"), str) else None
    if file_host in _WILDCARDS:
        file_host = DEFAULT_HOST
    file_port = data.get("port") if isinstance(data.get("port"), int) else None

    chosen_host = host or env.get("TAKLER_HOST") or file_host or DEFAULT_HOST
    env_port = env.get("TAKLER_PORT")
    if port is None and env_port:
        try:
            port = int(env_port)
        except ValueError:
            raise InvalidValueError(f"TAKLER_PORT must be a number, not {env_port!r}") from None
    chosen_port = port if port is not None else file_port
    if chosen_port is None:
        raise UnreachableError(
            f"no takler server found: {home_path / 'server.json'} does not exist"
            " (start one with `takler serve`, or set TAKLER_PORT)"
        )
    same_server = data and chosen_host == file_host and chosen_port == file_port
    file_token = data.get("token") if same_server and isinstance(data.get("token"), str) else None
    chosen_cafile = cafile or env.get("TAKLER_CAFILE") or None
    if chosen_cafile is None and same_server and isinstance(data.get("cafile"), str):
        chosen_cafile = data["cafile"]
    return ServerAddress(
        host=chosen_host,
        port=chosen_port,
        token=token or env.get("TAKLER_TOKEN") or file_token,
        cafile=chosen_cafile,
        tls=bool(chosen_cafile) or bool(same_server and data.get("tls")),
    )
