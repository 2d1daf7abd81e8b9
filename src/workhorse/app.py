"""The App: the handler registry, the middleware and (with a store) the producer."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from typing_extensions import Unpack

from workhorse.options import HandlerOptionsDict
from workhorse.registry import Registration, Registry
from workhorse.types import Adapter, HandlerFunc

F = TypeVar("F", bound=HandlerFunc)

#: Used when neither a URL nor $WORKHORSE_URL is given.
DEFAULT_URL = "sqlite:///workhorse.db"


class App:
    """The entry point: register handlers and middleware, enqueue and control jobs.

    ``url`` picks the store: ``sqlite:///file.db`` (the default), ``memory://``,
    ``redis://host:6379/0`` or ``postgresql://...``. Without one, ``$WORKHORSE_URL`` is used,
    then ``sqlite:///workhorse.db``. Nothing connects until the store is first needed.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or os.environ.get("WORKHORSE_URL") or DEFAULT_URL
        self.registry = Registry()
        self._adapters: list[Adapter] = []
        #: Bumped on every change to handlers or middleware, so cached chains are rebuilt.
        self.generation = 0

    @property
    def adapters(self) -> tuple[Adapter, ...]:
        """The adapters applied to every job, outermost first."""
        return tuple(self._adapters)

    def use(self, *adapters: Adapter) -> None:
        """Add adapters for every job; the first given runs outermost."""
        for adapter in adapters:
            if not callable(adapter):
                raise TypeError(f"an adapter must be callable, not {adapter!r}")
        self._adapters.extend(adapters)
        self.generation += 1

    def register(self, name: str, fn: HandlerFunc,
                 **options: Unpack[HandlerOptionsDict]) -> Registration:
        """Register ``fn`` as the handler for jobs named ``name`` (options as for ``handler``)."""
        registration = self.registry.register(name, fn, dict(options))
        self.generation += 1
        return registration

    def handler(self, name: str | None = None,
                **options: Unpack[HandlerOptionsDict]) -> Callable[[F], F]:
        """Decorator registering a handler; ``name`` defaults to the function's name.

        Options: ``queue``, ``retries``, ``timeout``, ``priority``, ``max_concurrency``,
        ``rate_limit`` ("20/s"), ``backoff``, ``cron``, ``every``, ``unique``, ``skip_dead``,
        ``args_type`` and ``adapters`` (per-handler middleware, inside the app's).
        Invalid options raise ConfigurationError here, not when a job runs.
        """

        def decorate(fn: F) -> F:
            self.register(name or str(getattr(fn, "__name__", "")), fn, **options)
            return fn

        return decorate

    def __repr__(self) -> str:
        return f"App({self.url!r}, handlers={self.registry.names()})"
