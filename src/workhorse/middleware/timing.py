"""The timing adapter: measures each run and reports it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from workhorse.job import Job
from workhorse.types import Adapter, Handler

#: Key under which the run's duration in seconds is stored in ``job.ctx``.
DURATION_KEY = "duration"


def timing(on_done: Callable[[Job[Any], float], None] | None = None) -> Adapter:
    """Measure the inner chain: seconds go to ``job.ctx["duration"]`` and ``on_done``."""

    def adapter(handler: Handler) -> Handler:
        async def timed(job: Job[Any]) -> Any:
            started = time.perf_counter()
            try:
                return await handler(job)
            finally:
                elapsed = time.perf_counter() - started
                job.ctx.set(DURATION_KEY, elapsed)
                if on_done is not None:
                    on_done(job, elapsed)

        return timed

    return adapter
