"""The job: what to run, with which args, and what became of its latest run."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from workhorse.context import Context
from workhorse.status import Status

ArgsT = TypeVar("ArgsT")

#: Called on ``job.checkin(message)``; the durable worker writes check-ins to the store.
CheckinSink = Callable[["Job[Any]", str], Awaitable[None]]

DEFAULT_QUEUE = "default"


def new_job_id() -> str:
    """A new job id: 32 hex digits, time-ordered in the first 12 so ids sort by creation,
    then 80 random bits (os.urandom directly: uuid4 costs twice as much on the hot path)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@dataclasses.dataclass(eq=False)
class Job(Generic[ArgsT]):
    """A unit of work: the handler's ``name``, its ``args`` and how to run it.

    Annotate a handler's parameter as ``Job[Order]`` to have ``args`` validated and
    converted to ``Order`` (a dataclass, TypedDict, msgspec Struct or pydantic model)
    before the handler runs.
    """

    #: Name of the handler that runs this job.
    name: str
    #: Arguments for the handler: a JSON object for stored jobs, anything in-process.
    args: ArgsT = dataclasses.field(default_factory=dict)  # type: ignore[assignment]
    #: Queue the job is placed in.
    queue: str = DEFAULT_QUEUE
    #: String metadata that travels with the job (trace context, tenant, ...).
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Seconds one run may take before it ends with status 408; None means no limit.
    timeout: float | None = None
    #: Higher runs first within a queue.
    priority: int = 0
    #: Number of the current run, starting at 1; 0 before the first run.
    attempt: int = 0
    #: Unique id.
    id: str = dataclasses.field(default_factory=new_job_id)
    #: When the job was created or enqueued (epoch seconds).
    enqueued_at: float = dataclasses.field(default_factory=time.time)
    #: When the job is due to run (epoch seconds); None means now.
    run_at: float | None = None
    #: When the latest run started and ended (epoch seconds).
    started_at: float | None = None
    finished_at: float | None = None
    #: Status of the latest run.
    status: Status = Status.UNKNOWN
    #: What the handler returned on its latest successful run.
    result: Any = None
    #: Error message and formatted traceback of the latest failed run.
    error: str | None = None
    traceback: str | None = None
    #: The value that triggered this run (``perform_receive`` or a source's message).
    message: Any = None
    #: Latest check-in message of the running handler, and when it was made.
    checkin_message: str | None = None
    checkin_at: float | None = None
    #: The per-run context; a fresh one for every run.
    ctx: Context = dataclasses.field(default_factory=Context, repr=False)
    _checkin_sink: CheckinSink | None = dataclasses.field(default=None, repr=False)

    async def checkin(self, message: str) -> None:
        """Report progress of a long run (shown by the UI and CLI)."""
        self.checkin_message = message
        self.checkin_at = time.time()
        if self._checkin_sink is not None:
            await self._checkin_sink(self, message)

    @property
    def duration(self) -> float | None:
        """Seconds the latest run took, once it has ended."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def for_run(self, *, new_id: bool = False) -> Job[ArgsT]:
        """A copy ready for a new run: fresh context and outcome, same work."""
        return dataclasses.replace(
            self,
            id=new_job_id() if new_id else self.id,
            headers=dict(self.headers),
            ctx=Context(),
            status=Status.UNKNOWN,
            result=None,
            error=None,
            traceback=None,
            started_at=None,
            finished_at=None,
            checkin_message=None,
            checkin_at=None,
        )
