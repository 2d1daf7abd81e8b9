"""JobRef: a handle on an enqueued job, to follow it and await its result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workhorse import codec
from workhorse.backends.base import JobRecord, State
from workhorse.errors import JobFailed, JobNotFound

if TYPE_CHECKING:
    from workhorse.app import App


class JobRef:
    """A reference to a job in the store, by id. Cheap to create; holds no state."""

    __slots__ = ("_app", "id")

    def __init__(self, app: App, job_id: str) -> None:
        self._app = app
        #: The job's id.
        self.id = job_id

    async def record(self) -> JobRecord:
        """The job as stored now; raises JobNotFound."""
        record = await (await self._app.backend()).get(self.id)
        if record is None:
            raise JobNotFound(f"no job {self.id}")
        return record

    async def status(self) -> State:
        """Where the job is now: scheduled, ready, running, retrying, succeeded, dead or
        cancelled."""
        return (await self.record()).state

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return its result.

        Raises TimeoutError if it is still live after ``timeout`` seconds, JobFailed if
        it ended dead or cancelled, JobNotFound if it does not exist.
        """
        backend = await self._app.backend()
        record = await backend.wait_finished(self.id, timeout if timeout is not None else 1e9)
        if record is None:
            if await backend.get(self.id) is None:
                raise JobNotFound(f"no job {self.id}")
            raise TimeoutError(f"job {self.id} did not finish within {timeout}s")
        if record.state is not State.SUCCEEDED:
            raise JobFailed(self.id, record.status or 500, record.error)
        return codec.decode(record.result) if record.result is not None else None

    async def cancel(self) -> State | None:
        """Cancel the job (see ``App.cancel``)."""
        return await self._app.cancel(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"JobRef({self.id!r})"
