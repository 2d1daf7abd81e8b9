"""The logging adapter: one structured record per run."""

from __future__ import annotations

import logging as stdlib_logging
import time
from typing import Any

from workhorse.chain import describe_exception, status_for_exception
from workhorse.job import Job
from workhorse.status import Outcome, Status
from workhorse.types import Adapter, Handler


def logging(
    logger: stdlib_logging.Logger | None = None, *, level: int = stdlib_logging.INFO
) -> Adapter:
    """Log each run with the fields job_id, job_name, queue, attempt, status and duration.

    Runs that end in a retry or dead status are logged at WARNING; the fields are also
    passed as ``extra`` so structured log handlers can index them.
    """
    log = logger or stdlib_logging.getLogger("workhorse.jobs")

    def adapter(handler: Handler) -> Handler:
        async def logged(job: Job[Any]) -> Any:
            started = time.perf_counter()
            try:
                result = await handler(job)
            except BaseException as exc:
                _emit(log, level, job, status_for_exception(exc), started, error=exc)
                raise
            _emit(log, level, job, job.ctx.status, started)
            return result

        return logged

    return adapter


def _emit(log: stdlib_logging.Logger, level: int, job: Job[Any], status: Status,
          started: float, error: BaseException | None = None) -> None:
    duration = time.perf_counter() - started
    fields = {
        "job_id": job.id,
        "job_name": job.name,
        "queue": job.queue,
        "attempt": job.attempt,
        "status": int(status),
        "duration": round(duration, 6),
    }
    if status.outcome in (Outcome.RETRY, Outcome.DEAD):
        level = max(level, stdlib_logging.WARNING)
    text = " ".join(f"{key}={value}" for key, value in fields.items())
    if error is not None:
        text += f" error={describe_exception(error)}"
    log.log(level, "job %s", text, extra=fields)
