"""Durable schedules: cron expressions (seconds first) and fixed intervals.

Every worker runs the scheduler. Each tick is enqueued ahead of time as a scheduled job
whose idempotency key names the schedule and the tick, so however many workers enqueue it,
the store keeps one job per tick, and a worker restart does not miss the next one.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from workhorse.options import validate_cron


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Enqueue job ``name`` with ``args`` on every tick of ``cron`` or every ``interval``."""

    name: str
    cron: str | None = None
    interval: float | None = None
    args: Any = None
    queue: str | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("a schedule needs exactly one of cron or interval")
        if self.cron is not None:
            validate_cron(self.cron)
        if self.interval is not None and self.interval <= 0:
            raise ValueError("interval must be positive")

    @property
    def key(self) -> str:
        """Identifies the schedule in tick idempotency keys."""
        spec = self.cron if self.cron is not None else f"every {self.interval:g}s"
        return f"{self.name}|{spec}"

    def next_tick(self, after: float) -> float:
        """The first tick strictly after ``after`` (epoch seconds; cron is read in UTC).

        Interval ticks fall on multiples of the interval since the epoch, so every worker
        computes the same ticks without talking to the others.
        """
        if self.interval is not None:
            return (math.floor(after / self.interval) + 1) * self.interval
        assert self.cron is not None
        start = datetime.fromtimestamp(after, tz=UTC)
        tick: float = croniter(self.cron, start, second_at_beginning=True).get_next(float)
        return tick

    def tick_key(self, tick: float) -> str:
        """The idempotency key of the job for ``tick``."""
        return f"schedule:{self.key}:{tick:.3f}"
