"""The job log line: one structured record per run, from the workers or this adapter."""

from __future__ import annotations

import logging as stdlib_logging
import time
from collections.abc import Mapping
from typing import Any

from workhorse.chain import describe_exception, status_for_exception
from workhorse.job import Job
from workhorse.status import Outcome, Status
from workhorse.types import Adapter, Handler

#: The logger of the job log line.
JOB_LOGGER = "workhorse.job"
#: Set in ``job.ctx`` by the adapter once it has logged the run, so that the worker running
#: the job does not log a second line for it.
LOGGED_KEY = "workhorse.logged"


def log_run(
    log: stdlib_logging.Logger, level: int, *, job_id: str, name: str, queue: str,
    attempt: int, status: Status, duration: float | None, error: str | None = None,
    state: str | None = None, payload: Mapping[str, Any] | None = None,
) -> None:
    """Log one run: the text names the job, and the fields ride along as the record's
    ``extra`` (``job_id``, ``job_name``, ``queue``, ``attempt``, ``status``, ``state``,
    ``duration_ms``, ``error``, and the ``payload`` fields (``job_args``, ``job_result``)
    only when given).

    Runs whose status means a retry or dead job are logged at WARNING at least.
    """
    if status.outcome in (Outcome.RETRY, Outcome.DEAD):
        level = max(level, stdlib_logging.WARNING)
    if not log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "job_id": job_id,
        "job_name": name,
        "queue": queue,
        "attempt": attempt,
        "status": int(status),
        "state": state,
        "duration_ms": None if duration is None else round(duration * 1000, 3),
        "error": error,
    }
    text = " ".join(f"{key}={value}" for key, value in fields.items()
                    if value is not None and key != "job_name")
    for key, value in (payload or {}).items():
        fields[key] = value
        text += f" {key}={value!r}"
    log.log(level, "job %s %s", name, text, extra=fields)


def logging(
    logger: stdlib_logging.Logger | None = None, *, level: int = stdlib_logging.INFO,
    payloads: bool = False,
) -> Adapter:
    """Log each run through this chain as the job log line (logger ``workhorse.job``).

    Fields: ``job_id``, ``job_name``, ``queue``, ``attempt``, ``status``, ``duration_ms``
    and ``error``, in the text and as ``extra``. Args and results are left out, as they may
    hold personal data, unless ``payloads=True`` (fields ``job_args``, ``job_result``).
    Retry or dead statuses log at WARNING. A worker running the job then logs no line of
    its own for that run.
    """
    log = logger or stdlib_logging.getLogger(JOB_LOGGER)

    def adapter(handler: Handler) -> Handler:
        async def logged(job: Job[Any]) -> Any:
            started = time.perf_counter()
            try:
                result = await handler(job)
            except BaseException as exc:
                _emit(log, level, job, status_for_exception(exc), started,
                      describe_exception(exc), {"job_args": job.args} if payloads else None)
                raise
            done = job.ctx.status.outcome is Outcome.DONE
            payload = None
            if payloads:
                payload = {"job_args": job.args}
                if done:
                    payload["job_result"] = result
            _emit(log, level, job, job.ctx.status, started, job.error, payload)
            return result

        return logged

    return adapter


def _emit(log: stdlib_logging.Logger, level: int, job: Job[Any], status: Status,
          started: float, error: str | None, payload: Mapping[str, Any] | None) -> None:
    job.ctx.set(LOGGED_KEY, True)
    log_run(log, level, job_id=job.id, name=job.name, queue=job.queue, attempt=job.attempt,
            status=status, duration=time.perf_counter() - started, error=error,
            payload=payload)
