"""The retry policy: from a finished run's status to what the store should do next."""

from __future__ import annotations

import dataclasses
import enum

from workhorse.options import HandlerOptions
from workhorse.status import Outcome, Status


class Action(enum.Enum):
    """The store move that follows a run."""

    SUCCEED = "succeed"
    RETRY = "retry"
    BURY = "bury"
    CANCEL = "cancel"


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with a job after a run, and for RETRY how long to wait first."""

    action: Action
    delay: float = 0.0
    #: For BURY: keep the job as dead (False when the handler opted out with skip_dead).
    keep: bool = True


def decide(status: Status, attempt: int, options: HandlerOptions) -> Decision:
    """The decision for a run of attempt ``attempt`` (1-based) that ended with ``status``.

    2xx and 444 succeed; 499 is cancelled; 4xx is dead at once; anything else is retried
    after ``options.backoff(attempt)`` seconds until ``options.retries`` retries are spent.
    """
    outcome = status.outcome
    if outcome is Outcome.DONE:
        return Decision(Action.SUCCEED)
    if outcome is Outcome.CANCELLED:
        return Decision(Action.CANCEL)
    if outcome is Outcome.RETRY and attempt <= options.retries:
        return Decision(Action.RETRY, delay=max(0.0, float(options.backoff(attempt))))
    return Decision(Action.BURY, keep=not options.skip_dead)
