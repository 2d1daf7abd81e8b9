"""The codec: strict, fast JSON (msgspec) for args, results and stored jobs."""

from __future__ import annotations

from typing import Any

import msgspec

from workhorse.errors import SerializationError

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_JSON_SCALARS = (str, int, float, bool, type(None))


def encode(value: Any, *, what: str = "value") -> bytes:
    """Encode ``value`` as JSON bytes, or raise SerializationError naming the offending key.

    Only JSON's own types (dict with str keys, list, tuple, str, int, float, bool, None) are
    accepted, so that what a handler receives is exactly what the caller passed.
    """
    problem = _find_problem(value, what)
    if problem is not None:
        path, culprit = problem
        raise SerializationError(
            f"{path} of type {type(culprit).__name__} is not JSON-serializable", path=path
        )
    try:
        return _encoder.encode(value)
    except (TypeError, OverflowError, ValueError) as exc:  # e.g. an int beyond 64 bits
        raise SerializationError(f"{what} cannot be encoded: {exc}", path=what) from exc


def decode(data: bytes | str) -> Any:
    """Decode JSON bytes; raises msgspec.DecodeError on malformed input."""
    return _decoder.decode(data)


def _find_problem(value: Any, path: str) -> tuple[str, Any] | None:
    """The path and value of the first thing JSON cannot hold faithfully, if any."""
    # An explicit walk (rather than msgspec's error) because msgspec does not report
    # *where* the unsupported value sits, and it silently turns tuples/sets/dataclasses
    # into other shapes.
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}] (key)", key
            found = _find_problem(item, f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_problem(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return path, value
