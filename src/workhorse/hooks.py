"""Lifecycle hooks: ``app.hooks(on_queued=..., on_start=..., on_finish=...)`` and the
``JobEvent`` each hook receives.

Hooks are called inline, on the event loop of the process where the event happens: a sync
hook is called directly, an async one awaited. Keep them quick; a hook that raises is
logged (with its name) and the job goes on as if it had not been called.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from workhorse.backends.base import State
from workhorse.status import Status

log = logging.getLogger("workhorse.hooks")

#: Which moment of a job's life an event reports.
EventKind = Literal["queued", "start", "finish"]

#: A hook: called with a JobEvent; may be sync or async; its return value is ignored.
Hook = Callable[["JobEvent"], "Awaitable[object] | object"]


@dataclasses.dataclass(frozen=True)
class JobEvent:
    """What a lifecycle hook is told about one job at one moment (all times epoch seconds).

    ``queued``: the store accepted a new job, or a LocalWorker a run (``attempt`` 0;
    ``state`` READY or SCHEDULED). ``start``: a worker starts a run (``state`` RUNNING,
    ``attempt`` counts from 1).
    ``finish``: the run's outcome is known, once per attempt: ``status`` is the run's and
    ``state`` where the job goes next (SUCCEEDED, RETRYING, DEAD, CANCELLED; READY when a
    stopping worker hands the job back; None when the worker lost the job's lease and
    cannot tell). In-process runs are never retried: a failed one finishes DEAD.
    """

    #: "queued", "start" or "finish".
    kind: EventKind
    #: The job's id, handler name and queue.
    id: str
    name: str
    queue: str
    #: The run's number, from 1; 0 for ``queued``.
    attempt: int
    #: Where the job is (queued, start) or goes next (finish); see the class docstring.
    state: State | None
    #: The run's status on ``finish``; UNKNOWN before.
    status: Status = Status.UNKNOWN
    #: The run's error message on a failed ``finish``.
    error: str | None = None
    #: When the job was enqueued, is due, and when this run started and ended.
    enqueued_at: float | None = None
    run_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: The worker running the job (durable workers only).
    worker_id: str | None = None
    #: The job's args and (on a successful ``finish``) its result. They may hold personal
    #: data: the built-in job log line leaves them out unless asked.
    args: Any = dataclasses.field(default=None, repr=False)
    result: Any = dataclasses.field(default=None, repr=False)

    @property
    def duration(self) -> float | None:
        """Seconds the run took (``finish`` only)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class Hooks:
    """The hooks registered on an app, per kind, in registration order."""

    def __init__(self) -> None:
        self.on_queued: list[Hook] = []
        self.on_start: list[Hook] = []
        self.on_finish: list[Hook] = []

    def __bool__(self) -> bool:
        return bool(self.on_queued or self.on_start or self.on_finish)

    def add(self, on_queued: Hook | None, on_start: Hook | None,
            on_finish: Hook | None) -> None:
        """Register the hooks given; each must be callable."""
        for hook, into in ((on_queued, self.on_queued), (on_start, self.on_start),
                           (on_finish, self.on_finish)):
            if hook is None:
                continue
            if not callable(hook):
                raise TypeError(f"a hook must be callable, not {hook!r}")
            into.append(hook)

    def of(self, kind: EventKind) -> list[Hook]:
        """The hooks of ``kind``, in registration order."""
        hooks: list[Hook] = getattr(self, f"on_{kind}")
        return hooks

    async def emit(self, event: JobEvent) -> None:
        """Call every hook of ``event.kind`` in order; one that raises is logged and the
        rest are still called."""
        for hook in self.of(event.kind):
            try:
                outcome = hook(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("hook %s (on_%s) failed for job %s", hook_name(hook),
                              event.kind, event.id)


def hook_name(hook: Callable[..., object]) -> str:
    """A readable name for a hook: its qualified name, else its repr."""
    name = getattr(hook, "__qualname__", None) or getattr(hook, "__name__", None)
    module = getattr(hook, "__module__", None)
    if name is None:
        return repr(hook)
    return f"{module}.{name}" if module else str(name)
