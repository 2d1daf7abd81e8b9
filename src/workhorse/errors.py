"""Every error workhorse raises, under one base class.

    WorkhorseError
    ├── ConfigurationError      bad option, URL or schedule given at set-up time
    ├── SerializationError      args or a result that cannot be encoded
    ├── UnknownHandlerError     no handler registered under a name
    ├── JobFailed               awaited a result of a job that ended dead or cancelled
    ├── JobError                raised by a handler to end a run with a status
    │   └── ArgumentError       args that do not match the handler's declared type (400)
    └── StoreError              the store failed or cannot be reached
        ├── QueueFull           a bounded queue is at its max size
        ├── StoreFull           the store is out of space (disk full, Redis maxmemory)
        └── JobNotFound         no job with that id
"""

from __future__ import annotations

from typing import Any

from workhorse.status import Status


class WorkhorseError(Exception):
    """Base class of every workhorse error."""


class ConfigurationError(WorkhorseError, ValueError):
    """An option, URL or schedule given at set-up time is invalid."""


class SerializationError(WorkhorseError, TypeError):
    """A value cannot be encoded as JSON; `path` names the offending key."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        #: Where the value sits, e.g. ``args["user"]["conn"]``.
        self.path = path


class UnknownHandlerError(WorkhorseError, LookupError):
    """No handler is registered under the job's name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no handler registered for {name!r}")
        self.name = name


class JobError(WorkhorseError):
    """Raise from a handler to end the run with an explicit status.

    ``raise JobError(403, "account closed")`` marks the job dead at once; a retryable
    status (408, 429, 500, 503) retries it with backoff.
    """

    def __init__(self, status: int | Status, message: str = "") -> None:
        self.status = Status.coerce(status)
        self.message = message or self.status.phrase
        super().__init__(f"{int(self.status)} {self.message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (int(self.status), self.message))


class ArgumentError(JobError):
    """The job's args do not match the type its handler declares (status 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.BAD_REQUEST, message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))


class JobFailed(WorkhorseError):
    """The awaited job ended dead or cancelled instead of succeeding."""

    def __init__(self, job_id: str, status: int, error: str | None) -> None:
        self.job_id = job_id
        self.status = Status.coerce(status)
        self.error = error
        reason = error or self.status.phrase
        super().__init__(f"job {job_id} ended with {int(self.status)}: {reason}")


class StoreError(WorkhorseError):
    """The store failed or cannot be reached."""


class QueueFull(StoreError):
    """The queue holds its maximum number of live jobs."""


class StoreFull(StoreError):
    """The store is out of space (disk or memory full); nothing of the call was written."""


class JobNotFound(StoreError, LookupError):
    """No job with that id exists in the store."""
