"""The timeout adapter: a run that takes too long is cancelled and ends with 408."""

from __future__ import annotations

import asyncio
from typing import Any

from workhorse.errors import JobError
from workhorse.job import Job
from workhorse.status import Status
from workhorse.types import Adapter, Handler


def timeout(seconds: float | None = None) -> Adapter:
    """Cancel the inner chain after ``seconds`` (default: the job's own ``timeout``).

    The run then raises ``JobError(408)``. A sync handler's thread cannot be interrupted:
    the run ends at the deadline but the thread finishes its call in the background.
    """
    if seconds is not None and seconds <= 0:
        raise ValueError("timeout must be positive")

    def adapter(handler: Handler) -> Handler:
        async def bounded(job: Job[Any]) -> Any:
            limit = seconds if seconds is not None else job.timeout
            if limit is None:
                return await handler(job)
            try:
                async with asyncio.timeout(limit):
                    return await handler(job)
            except TimeoutError:
                raise JobError(Status.TIMEOUT, f"timed out after {limit:g}s") from None

        return bounded

    return adapter
