"""Who may do what: tokens, roles, the server file and the audit log.

Tokens live in ``<home>/tokens.json`` (mode 0600) as SHA-256 hashes only;
the plain token is shown once, when it is made. Roles: ``operator`` may do
everything, ``read`` may look, ``anonymous`` may only ping (and send child
commands, which carry their job's password instead).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from takler.core.errors import AuthError, DuplicateNameError, InvalidValueError, NodeNotFoundError
from takler.protocol import COMMAND_ROLES

log = logging.getLogger("takler.auth")
audit_log = logging.getLogger("takler.audit")

TOKENS_FILE = "tokens.json"
SERVER_FILE = "server.json"
OWNER = "owner"
ROLES = ("operator", "read")
_KNOWN_MAX = 1024
_RANK = {"anonymous": 0, "read": 1, "operator": 2}


class ForbiddenError(AuthError):
    """A read-only token asked for an operator command."""

    code = "forbidden"


@attrs.frozen
class Identity:
    """Who sent a request: a token's name and role."""

    name: str
    role: str  # "operator" | "read" | "anonymous"


ANONYMOUS = Identity("anonymous", "anonymous")


@attrs.frozen
class TokenEntry:
    name: str
    role: str
    token_sha256: str
    created: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _write_private(path: Path, data: Any) -> None:
    """Write JSON readable by the owner only, atomically (tmp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check(identity: Identity, command_role: str) -> None:
    """Allow or refuse a command needing ``command_role`` ("public", "read", "operator").

    Raises:
        AuthError: (``unauthorized``) no valid token for a non-public command.
        ForbiddenError: (``forbidden``) a read token for an operator command.
    """
    if command_role == "public":
        return
    have = _RANK.get(identity.role, 0)
    if have >= _RANK.get(command_role, 3):
        return
    if have == 0:
        raise AuthError("this command needs a token (Authorization: Bearer <token>)")
    raise ForbiddenError(f"token {identity.name!r} is read-only; this command needs an operator")


def audit(identity: Identity, command: str, args: Any, outcome: str) -> None:
    """One line in the ``takler.audit`` log: who, what, where, and the outcome.

    Commands that change something and every refusal are logged at INFO; reads
    that succeed (``ping``, ``show``, ``why``... of role public or read) at
    DEBUG, as viewers and monitors poll them several times a second.
    """
    level = logging.INFO
    if outcome == "ok" and COMMAND_ROLES.get(command, "operator") != "operator":
        level = logging.DEBUG
    if not audit_log.isEnabledFor(level):
        return
    path = args.get("path") if isinstance(args, dict) else None
    shown = path if isinstance(path, str) else "-"
    if not shown or not shown.isprintable() or " " in shown:
        # Quoted, so a crafted path cannot forge audit lines or fields.
        shown = repr(shown)
    audit_log.log(level, "%s %s %s %s", identity.name, command, shown[:300], outcome)


class Auth:
    """The token table; :meth:`open` for a server home, :meth:`memory` for tests."""

    def __init__(
        self,
        entries: list[TokenEntry],
        path: Path | None = None,
        clock: Callable[[], str] = _now,
    ) -> None:
        self._entries = {e.name: e for e in entries}
        self._path = path
        self._clock = clock
        # Valid tokens already checked -> identity: every request and every
        # streamed message checks its token. Emptied on any change of the table.
        self._known: dict[str, Identity] = {}

    @classmethod
    def open(cls, home: str | Path) -> tuple[Auth, str]:
        """Load ``<home>/tokens.json``, creating it with an ``owner`` operator token.

        Returns:
            The table and the plain owner token: new on first start; on a
            restart, the one in ``server.json`` while it is still valid, else
            a fresh one that replaces the old owner token.

        Raises:
            InvalidValueError: the tokens file is unreadable or malformed.
        """
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        path = home / TOKENS_FILE
        auth = cls(_read_tokens(path) if path.exists() else [], path)
        token = _previous_owner_token(home)
        if token is not None and auth.identify(token) == Identity(OWNER, "operator"):
            return auth, token
        if OWNER in auth._entries:
            log.info("issuing a new owner token (server.json is missing or out of date)")
            del auth._entries[OWNER]
            auth._known.clear()
        return auth, auth.add(OWNER, "operator")

    @classmethod
    def memory(cls, tokens: Mapping[str, tuple[str, str]]) -> Auth:
        """A table kept in memory: ``{plain token: (name, role)}``."""
        return cls(
            [TokenEntry(name, role, _hash(token), "") for token, (name, role) in tokens.items()]
        )

    def identify(self, token: str | None) -> Identity:
        """The identity a token stands for; anonymous when unknown or ``None``."""
        if not token:
            return ANONYMOUS
        known = self._known.get(token)
        if known is not None:
            return known
        digest = _hash(token)
        found = ANONYMOUS
        # Compare against every entry in constant time so timing reveals nothing.
        for entry in self._entries.values():
            if hmac.compare_digest(digest, entry.token_sha256):
                found = Identity(entry.name, entry.role)
        if found != ANONYMOUS and len(self._known) < _KNOWN_MAX:
            self._known[token] = found
        return found

    def add(self, name: str, role: str) -> str:
        """Make a token; returns it in plain (the only time it is shown).

        Raises:
            InvalidValueError: bad name or role.
            DuplicateNameError: a token of that name exists.
        """
        if role not in ROLES:
            raise InvalidValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not name or len(name) > 64 or not name.isprintable() or " " in name:
            raise InvalidValueError("a token name is 1-64 printable characters without spaces")
        if name in self._entries:
            raise DuplicateNameError(f"a token named {name!r} exists; revoke it first")
        token = secrets.token_urlsafe(32)
        self._entries[name] = TokenEntry(name, role, _hash(token), self._clock())
        self._known.clear()
        self._save()
        return token

    def list(self) -> list[dict[str, str]]:
        """Every token's name, role and creation time (never the token)."""
        return [
            {"name": e.name, "role": e.role, "created": e.created}
            for e in sorted(self._entries.values(), key=lambda e: e.name)
        ]

    def revoke(self, name: str) -> None:
        """Delete a token; it stops working at once.

        Raises:
            NodeNotFoundError: (``not_found``) no token of that name.
        """
        if name not in self._entries:
            raise NodeNotFoundError(f"no token named {name!r}")
        del self._entries[name]
        self._known.clear()
        self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        data = {"tokens": [attrs.asdict(e) for e in self._entries.values()]}
        _write_private(self._path, data)


def _read_tokens(path: Path) -> list[TokenEntry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [
            TokenEntry(str(e["name"]), str(e["role"]), str(e["token_sha256"]), str(e["created"]))
            for e in data["tokens"]
        ]
    except (OSError, ValueError, LookupError, TypeError) as exc:
        raise InvalidValueError(f"cannot read tokens from {path}: {exc}") from None


def _previous_owner_token(home: Path) -> str | None:
    try:
        token = read_server_file(home).get("token")
    except (OSError, ValueError):
        return None
    return token if isinstance(token, str) else None


def write_server_file(
    home: str | Path,
    host: str,
    port: int,
    token: str | None,
    pid: int,
    version: str,
    tls: bool,
    cafile: str | None = None,
) -> Path:
    """Write ``<home>/server.json`` (mode 0600) for local clients to find the server.

    ``cafile`` is what clients should trust under TLS (the jobs' CA file).
    """
    path = Path(home) / SERVER_FILE
    data = {"host": host, "port": port, "token": token, "pid": pid, "version": version, "tls": tls}
    if cafile is not None:
        data["cafile"] = cafile
    _write_private(path, data)
    return path


def read_server_file(home: str | Path) -> dict[str, Any]:
    """The contents of ``<home>/server.json``.

    Raises:
        FileNotFoundError: no server file.
        ValueError: it is not a JSON object.
    """
    data = json.loads((Path(home) / SERVER_FILE).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("server.json is not a JSON object")
    return data
