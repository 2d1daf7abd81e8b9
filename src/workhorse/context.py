"""The per-run context: key/values for the middleware chain and the run's status."""

from __future__ import annotations

from typing import Any

from workhorse.status import Status


class Context:
    """Key/values shared by the adapters and the handler of one run, plus its status.

    Every run gets a fresh context, so nothing leaks from one run of a job to the next.
    """

    __slots__ = ("_values", "status")

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = dict(values or {})
        #: Set by the handler or an adapter; UNKNOWN until then.
        self.status: Status = Status.UNKNOWN

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` for the rest of the chain."""
        self._values[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        return self._values.get(key, default)

    def values(self) -> dict[str, Any]:
        """A copy of every key/value set so far."""
        return dict(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __repr__(self) -> str:
        return f"Context(status={self.status!r}, values={self._values!r})"
