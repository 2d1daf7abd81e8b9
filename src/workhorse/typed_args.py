"""Typed arguments: find the type a handler declares for its args and convert to it."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import msgspec

from workhorse.errors import ArgumentError, ConfigurationError
from workhorse.job import Job
from workhorse.types import HandlerFunc


def declared_args_type(fn: HandlerFunc) -> type[Any] | None:
    """The ``T`` of a handler whose first parameter is annotated ``Job[T]``, if any."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params:
        raise ConfigurationError(f"handler {fn!r} must take the job as its first parameter")
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn).__call__
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to no declared type
        return None
    hint = hints.get(params[0].name)
    if typing.get_origin(hint) is not Job:
        return None
    (arg,) = typing.get_args(hint)
    if arg is Any or typing.get_origin(arg) is dict or arg is dict:
        return None
    return typing.cast(type[Any], arg)


def convert_args(args: Any, args_type: type[Any]) -> Any:
    """``args`` as an instance of ``args_type``; ArgumentError (400) names the bad field."""
    if _is_pydantic_model(args_type):
        if isinstance(args, args_type):
            return args
        import pydantic

        try:
            return args_type.model_validate(args)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ArgumentError(f"invalid args for {args_type.__name__}: {problems}") from None
    if isinstance(args_type, type) and not _is_typeddict(args_type) and isinstance(args, args_type):
        return args
    try:
        return msgspec.convert(args, args_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ArgumentError(f"invalid args for {_type_name(args_type)}: {exc}") from None


def _is_pydantic_model(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_fields")


def _is_typeddict(tp: Any) -> bool:
    return typing.is_typeddict(tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", repr(tp))
