"""A lean synchronous client for the child commands jobs send.

Standard library only and no Trio, so a job pays little to start it. It
speaks the ``POST /child`` wire format and retries with exponential backoff
while the server is unreachable or not ready, until ``timeout`` seconds have
passed since the first attempt.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from takler.core.errors import TaklerError

_FIRST_DELAY = 0.1
_MAX_DELAY = 10.0
_JITTER = 0.2
# A reply that takes longer than this is treated as lost (retried); `wait`
# may be held by the server until the timeout instead.
_REPLY_TIMEOUT = 60.0


class ChildCommandError(TaklerError, RuntimeError):
    """The server refused a child command, or could not be reached in time.

    Attributes:
        code: the server's error code (``zombie``, ``not_found``...), or
            ``unreachable`` after the timeout, ``bad_reply``, ``bad_environment``.
        status: the HTTP status of the refusal, ``None`` when there was none.
    """

    def __init__(self, message: str, code: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ChildClient:
    """Sends one job's child commands to the server."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        password: str,
        tryno: int,
        timeout: float = 86400.0,
        cafile: str | None = None,
        *,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        host, port: the server.
        path, password, tryno: the task and its current submission.
        timeout: seconds to keep retrying an unreachable or unready server.
        cafile: CA bundle to verify the server's TLS certificate; HTTPS when set.
        sleep, clock: the backoff's sleep and monotonic clock (tests pass fakes).
        """
        self.host = host
        self.port = port
        self.path = path
        self.password = password
        self.tryno = tryno
        self.timeout = timeout
        self.cafile = cafile
        self._sleep = sleep
        self._clock = clock

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ChildClient:
        """A client for the job described by TAKLER_* (or ecFlow's ECF_*) variables.

        Raises:
            ChildCommandError: (code ``bad_environment``) a variable is missing
                or malformed.
        """

        def get(*names: str) -> str | None:
            return next((environ[n] for n in names if environ.get(n)), None)

        port = get("TAKLER_PORT", "ECF_PORT")
        path = get("TAKLER_NAME", "ECF_NAME")
        tryno = get("TAKLER_TRYNO", "ECF_TRYNO")
        timeout = get("TAKLER_TIMEOUT", "ECF_TIMEOUT") or "86400"
        if port is None or path is None or tryno is None:
            raise ChildCommandError(
                "TAKLER_PORT, TAKLER_NAME and TAKLER_TRYNO (or ECF_PORT, ECF_NAME,"
                " ECF_TRYNO) must be set",
                code="bad_environment",
            )
        try:
            return cls(
                host=get("TAKLER_HOST", "ECF_HOST", "ECF_NODE") or "localhost",
                port=int(port),
                path=path,
                password=get("TAKLER_PASSWORD", "ECF_PASS") or "",
                tryno=int(tryno),
                timeout=float(timeout),
                cafile=get("TAKLER_CAFILE"),
            )
        except ValueError:
            raise ChildCommandError(
                f"bad job environment: port {port!r}, try {tryno!r}, timeout {timeout!r}"
                " must be numbers",
                code="bad_environment",
            ) from None

    def init(self, pid: int | None) -> object:
        """Report that the job started, with its process id."""
        return self.send("init", {"pid": pid})

    def event(self, name: str, value: bool = True) -> object:
        """Set (or with ``value=False`` clear) an event."""
        return self.send("event", {"name": name, "value": value})

    def meter(self, name: str, value: int) -> object:
        """Set a meter."""
        return self.send("meter", {"name": name, "value": value})

    def label(self, name: str, text: str) -> object:
        """Set a label's text."""
        return self.send("label", {"name": name, "text": text})

    def wait(self, expression: str) -> object:
        """Block until the server finds the expression true."""
        return self.send("wait", {"expression": expression})

    def complete(self) -> object:
        """Report that the job finished its work."""
        return self.send("complete", {})

    def abort(self, reason: str = "") -> object:
        """Report that the job failed."""
        return self.send("abort", {"reason": reason})

    def send(self, command: str, args: Mapping[str, Any]) -> object:
        """Send one child command, retrying per the backoff policy.

        Returns:
            The ``result`` of the server's reply.

        Raises:
            ChildCommandError: the server refused the command (``status`` 4xx,
                never retried), or gave no usable answer for ``timeout`` seconds
                (code ``unreachable``).
        """
        body = json.dumps(
            {
                "v": 1,
                "path": self.path,
                "password": self.password,
                "tryno": self.tryno,
                "command": command,
                "args": dict(args),
            }
        ).encode()
        deadline = self._clock() + self.timeout
        delay = _FIRST_DELAY
        while True:
            remaining = deadline - self._clock()
            reply_timeout = max(
                remaining if command == "wait" else min(remaining, _REPLY_TIMEOUT), 1.0
            )
            try:
                status, data = self._post(body, reply_timeout)
            except (OSError, http.client.HTTPException) as exc:
                problem = f"cannot reach {self.host}:{self.port}: {_describe(exc)}"
            else:
                if status == 200:
                    return _result(data)
                if 400 <= status < 500:
                    code, message = _error(data, status)
                    raise ChildCommandError(
                        f"{command} refused ({status} {code}): {message}", code=code, status=status
                    )
                problem = f"server answered {status}"
            pause = min(delay * random.uniform(1 - _JITTER, 1 + _JITTER), deadline - self._clock())
            if pause <= 0:
                raise ChildCommandError(
                    f"{command} failed after {self.timeout:g} s: {problem}", code="unreachable"
                )
            self._sleep(pause)
            delay = min(delay * 2, _MAX_DELAY)

    def _post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        conn: http.client.HTTPConnection
        if self.cafile:
            import ssl  # only TLS jobs pay for it

            context = ssl.create_default_context(cafile=self.cafile)
            # The server's own certificate may stand as the CA (as curl accepts it).
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(
                "POST",
                "/child",
                body=body,
                headers={"Content-Type": "application/json", "Connection": "close"},
            )
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no reply in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _result(data: bytes) -> object:
    if not data.strip():
        return None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ChildCommandError(
            f"server reply is not JSON: {data[:80]!r}", code="bad_reply", status=200
        ) from None
    return reply.get("result") if isinstance(reply, dict) else None


def _error(data: bytes, status: int) -> tuple[str, str]:
    try:
        error = json.loads(data)["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, LookupError, TypeError):
        return "error", f"HTTP status {status}"
