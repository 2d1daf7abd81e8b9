"""The codec: strict, fast JSON (msgspec) for args, results and stored jobs."""

from __future__ import annotations

from typing import Any

import msgspec

from workhorse.errors import SerializationError

#: The most bytes a job's encoded args may take. Enqueue refuses more (SerializationError)
#: and a worker buries a stored job with more (400) without decoding it: a payload that size
#: would be read into every worker's memory on each claim. Large data belongs in a file or
#: blob store, with its key in the args.
MAX_ARGS_SIZE = 16 * 1024 * 1024

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


#: The one header a store reads back in place of stored headers that do not decode to an
#: object of strings; its value says why. A worker buries such a job (400) without running it.
BAD_HEADERS = "workhorse-bad-headers"


def decode_headers(data: bytes | str | None) -> dict[str, str]:
    """Stored headers as a dict; never raises, so one bad row cannot stop a claim (see
    ``BAD_HEADERS``)."""
    if not data:
        return {}
    try:
        value = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        return {BAD_HEADERS: f"undecodable headers: {exc}"}
    return headers_of(value)


def headers_of(value: Any) -> dict[str, str]:
    """Decoded stored headers as a dict of strings, or ``BAD_HEADERS`` saying they are not."""
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return {BAD_HEADERS: "undecodable headers: not an object of strings"}
    return value


def check_args_size(payload: bytes) -> None:
    """Raise SerializationError if encoded args are larger than ``MAX_ARGS_SIZE``."""
    if len(payload) > MAX_ARGS_SIZE:
        raise SerializationError(
            f"args too large: {len(payload)} bytes encoded, more than the {MAX_ARGS_SIZE} "
            "allowed; pass a reference to large data instead", path="args")


def decode_args(payload: bytes) -> Any:
    """Decode a stored job's args; SerializationError if too large, msgspec.DecodeError if
    malformed."""
    check_args_size(payload)
    return _decoder.decode(payload)


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
