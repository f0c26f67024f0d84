"""Tokens, roles, the server file and the audit log."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from takler.core.errors import AuthError, DuplicateNameError, InvalidValueError, NodeNotFoundError
from takler.server.auth import (
    ANONYMOUS,
    Auth,
    ForbiddenError,
    Identity,
    audit,
    check,
    read_server_file,
    write_server_file,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_open_makes_an_owner_token_stored_as_a_hash(tmp_path: Path) -> None:
    auth, token = Auth.open(tmp_path)
    assert auth.identify(token) == Identity("owner", "operator")
    tokens = tmp_path / "tokens.json"
    assert mode(tokens) == 0o600
    text = tokens.read_text()
    assert token not in text
    (entry,) = json.loads(text)["tokens"]
    assert entry["name"] == "owner" and entry["role"] == "operator"
    assert len(entry["token_sha256"]) == 64 and entry["created"]
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]  # no temporary left


def test_restart_keeps_the_owner_token_from_server_json(tmp_path: Path) -> None:
    _, token = Auth.open(tmp_path)
    write_server_file(tmp_path, "127.0.0.1", 5000, token, 42, "0.2.0", False)
    auth, again = Auth.open(tmp_path)
    assert again == token
    assert auth.identify(token).name == "owner"


def test_restart_without_server_json_issues_a_new_owner_token(tmp_path: Path) -> None:
    auth, old = Auth.open(tmp_path)
    reader = auth.add("viewer", "read")
    auth, new = Auth.open(tmp_path)
    assert new != old
    assert auth.identify(old) == ANONYMOUS
    assert auth.identify(new) == Identity("owner", "operator")
    assert auth.identify(reader) == Identity("viewer", "read")  # others are kept


def test_add_list_revoke_persist(tmp_path: Path) -> None:
    auth, _ = Auth.open(tmp_path)
    token = auth.add("ci", "read")
    assert [(e["name"], e["role"]) for e in auth.list()] == [("ci", "read"), ("owner", "operator")]
    assert all(set(e) == {"name", "role", "created"} for e in auth.list())
    auth2, _ = Auth.open(tmp_path)
    assert auth2.identify(token) == Identity("ci", "read")
    auth2.revoke("ci")
    assert auth2.identify(token) == ANONYMOUS
    assert Auth.open(tmp_path)[0].identify(token) == ANONYMOUS
    with pytest.raises(NodeNotFoundError):
        auth2.revoke("ci")


@pytest.mark.parametrize(
    ("name", "role", "error"),
    [
        ("x", "admin", InvalidValueError),
        ("", "read", InvalidValueError),
        ("has space", "read", InvalidValueError),
        ("n" * 65, "read", InvalidValueError),
        ("owner", "read", DuplicateNameError),
    ],
)
def test_add_refuses(tmp_path: Path, name: str, role: str, error: type[Exception]) -> None:
    auth, _ = Auth.open(tmp_path)
    with pytest.raises(error):
        auth.add(name, role)


def test_identify_unknown_and_empty_tokens() -> None:
    auth = Auth.memory({"secret": ("alice", "operator")})
    assert auth.identify("secret") == Identity("alice", "operator")
    for token in (None, "", "secre", "secret ", "SECRET"):
        assert auth.identify(token) == ANONYMOUS


def test_corrupt_tokens_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").write_text("{not json")
    with pytest.raises(InvalidValueError, match="cannot read tokens"):
        Auth.open(tmp_path)


@pytest.mark.parametrize(
    ("role", "needed", "error"),
    [
        ("anonymous", "public", None),
        ("anonymous", "read", AuthError),
        ("anonymous", "operator", AuthError),
        ("read", "read", None),
        ("read", "operator", ForbiddenError),
        ("operator", "read", None),
        ("operator", "operator", None),
    ],
)
def test_check(role: str, needed: str, error: type[Exception] | None) -> None:
    identity = Identity("someone", role)
    if error is None:
        check(identity, needed)
        return
    with pytest.raises(error) as info:
        check(identity, needed)
    assert info.value.code == ("forbidden" if error is ForbiddenError else "unauthorized")  # type: ignore[attr-defined]


def test_server_file_round_trip_is_private(tmp_path: Path) -> None:
    path = write_server_file(tmp_path, "127.0.0.1", 5123, "tok", 99, "0.2.0", True)
    assert mode(path) == 0o600
    assert read_server_file(tmp_path) == {
        "host": "127.0.0.1",
        "port": 5123,
        "token": "tok",
        "pid": 99,
        "version": "0.2.0",
        "tls": True,
    }
    with pytest.raises(FileNotFoundError):
        read_server_file(tmp_path / "nowhere")


def test_audit_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="takler.audit"):
        audit(Identity("alice", "operator"), "suspend", {"path": "/f/t"}, "ok")
        audit(ANONYMOUS, "requeue", {}, "unauthorized")
    assert [r.getMessage() for r in caplog.records] == [
        "alice suspend /f/t ok",
        "anonymous requeue - unauthorized",
    ]


def test_successful_reads_are_audited_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    viewer = Identity("bob", "read")
    with caplog.at_level(logging.DEBUG, logger="takler.audit"):
        audit(viewer, "show", {"path": "/f"}, "ok")
        audit(viewer, "ping", {}, "ok")
        audit(viewer, "show", {"path": "/g"}, "not_found")
        audit(viewer, "begin", {"path": "/f"}, "forbidden")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "bob show /f ok"),
        (logging.DEBUG, "bob ping - ok"),
        (logging.INFO, "bob show /g not_found"),
        (logging.INFO, "bob begin /f forbidden"),
    ]
