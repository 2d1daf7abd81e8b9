"""The handler registry: names to functions and their validated options."""

from __future__ import annotations

import dataclasses
from typing import Any

from workhorse.errors import ConfigurationError, UnknownHandlerError
from workhorse.options import HandlerOptions, build_options
from workhorse.typed_args import declared_args_type
from workhorse.types import HandlerFunc


@dataclasses.dataclass(frozen=True)
class Registration:
    """A registered handler: its name, function and options."""

    name: str
    fn: HandlerFunc
    options: HandlerOptions

    @property
    def args_type(self) -> type[Any] | None:
        """The type args are converted to before the handler runs, if it declares one."""
        return self.options.args_type


class Registry:
    """Handlers by name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Registration] = {}

    def register(self, name: str, fn: HandlerFunc, options: dict[str, Any]) -> Registration:
        """Validate ``options`` and register ``fn`` under ``name``; re-registering replaces."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError("a handler name must be a non-empty string")
        if not callable(fn):
            raise ConfigurationError(f"handler {name!r} must be callable, not {fn!r}")
        validated = build_options(name, options)
        if validated.args_type is None:
            validated = dataclasses.replace(validated, args_type=declared_args_type(fn))
        registration = Registration(name=name, fn=fn, options=validated)
        self._handlers[name] = registration
        return registration

    def get(self, name: str) -> Registration:
        """The registration for ``name``; raises UnknownHandlerError."""
        try:
            return self._handlers[name]
        except KeyError:
            raise UnknownHandlerError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Any:
        return iter(list(self._handlers.values()))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._handlers)
