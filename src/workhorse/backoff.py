"""Backoff: how long to wait before the next attempt of a failed job."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import TypeAlias

#: A backoff maps the attempt that just failed (1, 2, ...) to seconds to wait.
BackoffFn: TypeAlias = Callable[[int], float]


@dataclasses.dataclass(frozen=True)
class Exponential:
    """Capped exponential backoff: ``base * factor ** (attempt - 1)`` seconds, at most ``cap``.

    With ``jitter`` the delay is drawn uniformly from [delay/2, delay], so that jobs
    that failed together do not all come back at the same instant.
    """

    base: float = 1.0
    cap: float = 300.0
    factor: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError("backoff needs base >= 0, cap >= 0 and factor >= 1")

    def __call__(self, attempt: int) -> float:
        exponent = max(attempt - 1, 0)
        # Clamp the exponent before raising so a large attempt count cannot overflow.
        delay = min(self.cap, self.base * self.factor ** min(exponent, 64))
        if self.jitter:
            delay = random.uniform(delay / 2, delay)
        return delay


def exponential(
    base: float = 1.0, cap: float = 300.0, *, factor: float = 2.0, jitter: bool = True
) -> Exponential:
    """Capped exponential backoff with jitter (the default for every handler)."""
    return Exponential(base=base, cap=cap, factor=factor, jitter=jitter)


def constant(seconds: float) -> Exponential:
    """The same delay before every retry."""
    return Exponential(base=seconds, cap=seconds, factor=1.0, jitter=False)
