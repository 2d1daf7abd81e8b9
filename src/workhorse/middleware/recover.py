"""The recover adapter: an exception becomes a status instead of escaping the chain."""

from __future__ import annotations

import asyncio
from typing import Any

from workhorse.chain import record_failure
from workhorse.job import Job
from workhorse.types import Adapter, Handler


def recover() -> Adapter:
    """Turn an exception from the inner chain into its status (500 unless it carries one).

    The message and traceback are kept on the job (``job.error``, ``job.traceback``), so
    adapters outside this one see a finished run with a status rather than an exception.
    Cancellation is not swallowed.
    """

    def adapter(handler: Handler) -> Handler:
        async def recovered(job: Job[Any]) -> Any:
            try:
                return await handler(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                record_failure(job, exc)
                return None

        return recovered

    return adapter
