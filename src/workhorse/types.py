"""Type aliases used across workhorse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from workhorse.job import Job

#: The chain's unit: an async callable that runs a job and returns its result.
Handler: TypeAlias = Callable[["Job[Any]"], Awaitable[Any]]
#: Middleware: wraps a Handler into another Handler.
Adapter: TypeAlias = Callable[[Handler], Handler]
#: What a user registers: an async or a sync callable taking the job.
HandlerFunc: TypeAlias = Callable[["Job[Any]"], Any]
