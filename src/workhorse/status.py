"""Job statuses, HTTP-style, and what each one means for the job afterwards."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """What the runtime does with a job once a run has ended with some status."""

    #: Finished: the result is stored and the job is done.
    DONE = "done"
    #: May pass later: retry with backoff, dead after the last attempt.
    RETRY = "retry"
    #: The job itself is wrong: dead at once, never retried.
    DEAD = "dead"
    #: Cancelled by a user: finished, never retried.
    CANCELLED = "cancelled"


class Status(enum.IntEnum):
    """The status of one run of a job, set by its handler or derived from how it ended."""

    #: The status was never set and the run produced no outcome; treated as 500.
    UNKNOWN = -1
    #: The run succeeded.
    SUCCESS = 200
    #: The job is malformed (bad args, unknown handler, undecodable payload).
    BAD_REQUEST = 400
    #: The job lacks credentials.
    UNAUTHORIZED = 401
    #: The job is not allowed.
    FORBIDDEN = 403
    #: The run took longer than its timeout.
    TIMEOUT = 408
    #: A rate limit was hit; try later.
    TOO_MANY_REQUESTS = 429
    #: The conditions for work were not met; nothing to do (a success).
    NO_RESPONSE = 444
    #: A user cancelled the job.
    CANCELLED = 499
    #: The handler failed.
    INTERNAL_ERROR = 500
    #: Something the handler needs is unavailable; try later.
    UNAVAILABLE = 503

    @property
    def phrase(self) -> str:
        """A short human phrase, e.g. ``"internal error"``."""
        return self.name.lower().replace("_", " ")

    @property
    def outcome(self) -> Outcome:
        """What the runtime does next after a run that ended with this status."""
        return outcome_of(self)

    @classmethod
    def coerce(cls, value: int | Status) -> Status:
        """The member for ``value``; an unlisted code maps to its class (4xx dead, 5xx retry)."""
        try:
            return cls(value)
        except ValueError:
            if 200 <= value < 300:
                return cls.SUCCESS
            if 400 <= value < 500:
                return cls.BAD_REQUEST
            return cls.INTERNAL_ERROR


_DONE = frozenset({Status.SUCCESS, Status.NO_RESPONSE})
_DEAD = frozenset({Status.BAD_REQUEST, Status.UNAUTHORIZED, Status.FORBIDDEN})


def outcome_of(status: Status) -> Outcome:
    """Map a run's final status to what happens next (the table in DESIGN.md)."""
    if status in _DONE:
        return Outcome.DONE
    if status in _DEAD:
        return Outcome.DEAD
    if status is Status.CANCELLED:
        return Outcome.CANCELLED
    # TIMEOUT, TOO_MANY_REQUESTS, INTERNAL_ERROR, UNAVAILABLE and UNKNOWN all may pass later.
    return Outcome.RETRY
