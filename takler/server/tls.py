"""TLS contexts for the service and its clients."""

from __future__ import annotations

import ssl
from pathlib import Path

from takler.core.errors import InvalidValueError


def server_ssl_context(certfile: str | Path, keyfile: str | Path | None = None) -> ssl.SSLContext:
    """A server context presenting ``certfile`` (with ``keyfile``, or a key inside it).

    Raises:
        InvalidValueError: the certificate or key cannot be loaded.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidValueError(f"cannot load certificate {certfile}: {exc}") from None
    return context


def client_ssl_context(cafile: str | Path | None = None) -> ssl.SSLContext:
    """A client context trusting ``cafile`` (the system's CAs when ``None``).

    Raises:
        InvalidValueError: the CA file cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidValueError(f"cannot load CA file {cafile}: {exc}") from None
    if cafile:
        # A pinned server certificate in the file is trusted as it stands (as curl does).
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
