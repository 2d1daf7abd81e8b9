"""Protobuf payloads: typed handlers, and turning a ``JobSpec`` into an ``EnqueueRequest``.

A job whose args are a protobuf message is stored as the message's JSON mapping (field
names as in the ``.proto``) with the header ``proto-type`` naming the message's full type,
so every store, the CLI and the dashboard can read it. A handler registered with
``proto_handler`` (or given the ``proto_args`` adapter) receives the decoded message as
``job.args``; the gRPC servicer refuses, at ``Enqueue``, a payload of another type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError, Message
from typing_extensions import Unpack

from workhorse import codec
from workhorse.app import App
from workhorse.errors import ArgumentError
from workhorse.grpc._proto.workhorse.v1 import jobs_pb2
from workhorse.job import Job
from workhorse.options import HandlerOptionsDict
from workhorse.producer import EnqueueRequest
from workhorse.types import Handler, HandlerFunc

M = TypeVar("M", bound=Message)
F = TypeVar("F", bound=HandlerFunc)

#: The header naming a protobuf payload's message type (its full name, e.g. ``img.Resize``).
PROTO_TYPE_HEADER = "proto-type"
#: The header carrying a JobSpec's ``correlation_id``.
CORRELATION_HEADER = "correlation-id"
#: Headers a JobSpec's ``metadata`` may not set: the two above, which have their own fields.
RESERVED_HEADERS = frozenset({PROTO_TYPE_HEADER, CORRELATION_HEADER, codec.BAD_HEADERS})
#: Headers under this prefix are workhorse's own (a source's message id, say).
RESERVED_PREFIX = "workhorse-"


class InvalidSpec(ValueError):
    """A JobSpec that cannot be enqueued; the message says why (INVALID_ARGUMENT)."""


@dataclasses.dataclass(frozen=True)
class ProtoArgs:
    """Adapter: decode a job's stored args into ``message_type`` before its handler runs.

    Args already of that type (an in-process job) pass as they are. A job whose
    ``proto-type`` header names another type, or whose args do not fit the message, ends
    with 400 (dead, no retry).
    """

    message_type: type[Message]

    def __call__(self, handler: Handler) -> Handler:
        async def decode(job: Job[Any]) -> Any:
            job.args = to_message(job.args, self.message_type, job.headers.get(PROTO_TYPE_HEADER))
            return await handler(job)

        return decode


def proto_args(message_type: type[Message]) -> ProtoArgs:
    """The adapter decoding a job's args into ``message_type`` (see ``ProtoArgs``)."""
    return ProtoArgs(message_type)


def proto_handler(app: App, name: str, message_type: type[M],
                  **options: Unpack[HandlerOptionsDict]) -> Callable[[F], F]:
    """Register a handler whose args are a ``message_type`` protobuf message.

        @wh.grpc.proto_handler(app, "resize", ResizeRequest, queue="images")
        async def resize(job: wh.Job[ResizeRequest]) -> dict: ...

    The handler receives the decoded message as ``job.args``; over gRPC, ``Enqueue``
    accepts it as ``proto_args`` (an ``Any`` of exactly that type) or as ``json_args`` that
    parse as the message, and refuses anything else with INVALID_ARGUMENT. Other options are
    those of ``app.handler``.
    """
    options["adapters"] = (*options.get("adapters", ()), ProtoArgs(message_type))
    options["args_type"] = message_type

    def decorate(fn: F) -> F:
        app.register(name, fn, **options)
        return fn

    return decorate


def message_types(app: App) -> dict[str, type[Message]]:
    """The protobuf message type of each handler of ``app`` registered with ``proto_args``."""
    found: dict[str, type[Message]] = {}
    for registration in app.registry:
        for adapter in registration.options.adapters:
            if isinstance(adapter, ProtoArgs):
                found[registration.name] = adapter.message_type
    return found


def to_message(args: Any, message_type: type[M], stored_type: str | None = None) -> M:
    """``args`` (a message or its JSON mapping) as a ``message_type``; ArgumentError if it is
    not one, or ``stored_type`` names another type."""
    if isinstance(args, message_type):
        return args
    expected = message_type.DESCRIPTOR.full_name
    if stored_type is not None and stored_type != expected:
        raise ArgumentError(f"the args are a {stored_type}, not the {expected} the handler takes")
    try:
        # ParseDict takes any JSON value: well-known types map to strings, lists, etc.
        return json_format.ParseDict(args, message_type())
    except (json_format.ParseError, TypeError, AttributeError) as exc:
        raise ArgumentError(f"the args are not a valid {expected}: {exc}") from None


def to_json(message: Message) -> dict[str, Any]:
    """A message's JSON mapping with the ``.proto`` field names, as jobs store it."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


#: Call metadata that continues the caller's trace: the W3C trace context and baggage, as
#: OpenTelemetry's gRPC instrumentation sends them.
TRACE_METADATA = ("traceparent", "tracestate", "baggage")


def request_for(spec: jobs_pb2.JobSpec, types: Mapping[str, type[Message]], *,
                trace: Mapping[str, str] | None = None) -> EnqueueRequest:
    """The EnqueueRequest of ``spec``; InvalidSpec if its args do not fit its job.

    ``trace`` (the call's trace metadata) goes into the job's headers unless the spec's own
    metadata carries a trace context, so a traced app's enqueue span continues the caller's.
    """
    if not spec.name:
        raise InvalidSpec("a job needs a name")
    headers = dict(spec.metadata)
    if trace and "traceparent" not in headers:
        headers.update(trace)
    reserved = sorted(name for name in headers
                      if name in RESERVED_HEADERS or name.startswith(RESERVED_PREFIX))
    if reserved:
        raise InvalidSpec(f"job {spec.name!r}: metadata may not set {', '.join(reserved)}")
    if spec.correlation_id:
        headers[CORRELATION_HEADER] = spec.correlation_id
    message_type = types.get(spec.name)
    args = _args(spec, message_type)
    if message_type is not None:
        headers[PROTO_TYPE_HEADER] = message_type.DESCRIPTOR.full_name
    return EnqueueRequest(
        spec.name, args,
        queue=spec.queue or None,
        priority=spec.priority if spec.HasField("priority") else None,
        delay=spec.delay.ToTimedelta().total_seconds() if spec.HasField("delay") else None,
        # Not ToDatetime().timestamp(): that naive datetime is UTC, read as local time.
        at=spec.run_at.ToNanoseconds() / 1e9 if spec.HasField("run_at") else None,
        timeout=spec.timeout.ToTimedelta().total_seconds() if spec.HasField("timeout") else None,
        headers=headers,
        unique=True if spec.unique or spec.unique_key else None,
        unique_key=spec.unique_key or None,
        idempotency_key=spec.idempotency_key or None,
    )


def _args(spec: jobs_pb2.JobSpec, message_type: type[Message] | None) -> Any:
    which = spec.WhichOneof("payload")
    if which == "proto_args":
        return _unpack(spec.name, spec.proto_args, message_type)
    args: Any = {}
    if which == "json_args":
        try:
            args = codec.decode(spec.json_args)
        except ValueError as exc:  # msgspec.DecodeError is a ValueError
            raise InvalidSpec(f"job {spec.name!r}: json_args is not JSON: {exc}") from None
    if message_type is None:
        return args
    try:
        return to_json(to_message(args, message_type))
    except ArgumentError as exc:
        raise InvalidSpec(f"job {spec.name!r}: {exc.message}") from None


def _unpack(name: str, payload: any_pb2.Any, message_type: type[Message] | None) -> Any:
    sent = payload.TypeName()
    if message_type is None:
        raise InvalidSpec(f"job {name!r} takes no protobuf payload (got a {sent}): register "
                          "its message type with wh.grpc.proto_handler, or send json_args")
    expected = message_type.DESCRIPTOR.full_name
    if sent != expected:
        raise InvalidSpec(f"job {name!r} takes a {expected}, not a {sent}")
    message = message_type()
    try:
        payload.Unpack(message)
    except DecodeError:
        raise InvalidSpec(f"job {name!r}: the payload does not decode as a {expected}") \
            from None
    return to_json(message)
