"""Turning an enqueue call into a NewJob for the store: defaults, encoding, keys."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from workhorse import codec
from workhorse.backends.base import NewJob
from workhorse.errors import ConfigurationError
from workhorse.job import DEFAULT_QUEUE, new_job_id
from workhorse.registry import Registry

_canonical = msgspec.json.Encoder(order="sorted")


@dataclasses.dataclass
class EnqueueRequest:
    """Everything ``App.enqueue`` accepts, for ``enqueue_many``."""

    name: str
    args: Any = None
    queue: str | None = None
    delay: float | None = None
    at: datetime | float | None = None
    priority: int | None = None
    timeout: float | None = None
    headers: Mapping[str, str] | None = None
    unique: bool | None = None
    unique_key: str | None = None
    idempotency_key: str | None = None
    job_id: str | None = None


def plain_args(args: Any) -> Any:
    """Args as JSON-ready builtins: dataclasses, msgspec Structs and pydantic models become
    dicts; ``None`` becomes ``{}``."""
    if args is None:
        return {}
    if hasattr(args, "model_dump") and callable(args.model_dump):
        return args.model_dump(mode="json")
    if isinstance(args, msgspec.Struct) or (
        dataclasses.is_dataclass(args) and not isinstance(args, type)
    ):
        return msgspec.to_builtins(args)
    return args


def unique_key_for(name: str, args: Any) -> str:
    """The unique key of a job: its name and a digest of its canonical (sorted) args."""
    digest = hashlib.sha256(_canonical.encode(args)).hexdigest()[:32]
    return f"{name}:{digest}"


def build_new_job(request: EnqueueRequest, registry: Registry, now: float | None = None) -> NewJob:
    """A NewJob from ``request``, filling defaults from the handler's options when the
    handler is registered here. Raises SerializationError (args) or ConfigurationError
    (the rest) before anything is written."""
    if not isinstance(request.name, str) or not request.name:
        raise ConfigurationError(
            f"a job name must be a non-empty string, not {request.name!r}; "
            "enqueue_many takes Job objects, enqueue takes the name and args")
    for field in ("queue", "unique_key", "idempotency_key", "job_id"):
        value = getattr(request, field)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"{field} must be a non-empty string, not {value!r}")
    options = registry.get(request.name).options if request.name in registry else None
    args = plain_args(request.args)
    payload = codec.encode(args, what="args")
    codec.check_args_size(payload)
    headers = dict(request.headers or {})
    codec.encode(headers, what="headers")
    if request.delay is not None and request.at is not None:
        raise ConfigurationError("give either delay= or at=, not both")
    run_at: float | None = None
    if request.delay is not None:
        if request.delay < 0:
            raise ConfigurationError("delay must be >= 0 seconds")
        run_at = (now if now is not None else time.time()) + request.delay
    elif request.at is not None:
        run_at = request.at.timestamp() if isinstance(request.at, datetime) else float(request.at)
    unique = request.unique if request.unique is not None else bool(options and options.unique)
    unique_key = request.unique_key
    if unique_key is None and unique:
        unique_key = unique_key_for(request.name, args)
    return NewJob(
        id=request.job_id or new_job_id(),
        name=request.name,
        queue=request.queue or (options.queue if options else DEFAULT_QUEUE),
        payload=payload,
        headers=headers,
        priority=request.priority if request.priority is not None else (
            options.priority if options else 0),
        timeout=request.timeout if request.timeout is not None else (
            options.timeout if options else None),
        run_at=run_at,
        unique_key=unique_key,
        idempotency_key=request.idempotency_key,
    )
