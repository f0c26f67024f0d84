"""JSON text: compact, strict encoding and decoding with orjson."""

from __future__ import annotations

from typing import Any

import orjson

from takler.core.errors import CodecError

# ---------------------------------------------------------------- JSON text


def dumps(obj: Any) -> str:
    """Compact JSON text of JSON-able data.

    Raises:
        CodecError: the data holds something JSON cannot express (an object,
            an integer beyond 64 bits...). The model refuses NaN and
            infinities on entry, so they never reach here.
    """
    try:
        return orjson.dumps(obj).decode()
    except orjson.JSONEncodeError as e:
        raise CodecError(f"cannot encode as JSON: {e}") from None


def loads(text: str | bytes) -> dict[str, Any]:
    """The JSON object in ``text``.

    Raises:
        CodecError: not valid JSON (the message gives line and column) or not an object.
    """
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise CodecError(f"bad JSON: {e}") from None
    if type(data) is not dict:
        raise CodecError(f"bad JSON: expected an object, got {type(data).__name__}")
    return data
