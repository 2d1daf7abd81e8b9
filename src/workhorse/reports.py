"""What a worker reports about each run: the hooks' JobEvents and the job log line."""

from __future__ import annotations

import logging
import time
from typing import Any

from workhorse.backends.base import JobRecord, Settlement, State
from workhorse.hooks import EventKind, JobEvent
from workhorse.job import Job
from workhorse.middleware.log import JOB_LOGGER, LOGGED_KEY, log_run
from workhorse.status import Outcome, Status

job_log = logging.getLogger(JOB_LOGGER)


def start_event(record: JobRecord, job: Job[Any] | None, worker_id: str) -> JobEvent:
    """The ``start`` event of a durable run of ``record`` (``job`` once decoded)."""
    return JobEvent("start", id=record.id, name=record.name, queue=record.queue,
                    attempt=record.attempt, state=State.RUNNING,
                    enqueued_at=record.enqueued_at, run_at=record.run_at,
                    started_at=time.time(), worker_id=worker_id,
                    args=None if job is None else job.args)


def finish_event(record: JobRecord, job: Job[Any] | None, settlement: Settlement | None,
                 worker_id: str) -> JobEvent:
    """The ``finish`` event of a durable run: ``settlement`` says where the job goes (None:
    nowhere this worker knows of, as when its lease was lost)."""
    now = time.time()
    state = None if settlement is None else settlement.state
    status = Status.UNKNOWN
    if settlement is not None and state is not State.READY:
        status = Status(settlement.status)
    elif job is not None and state is None:
        status = job.status
    error = settlement.error if settlement is not None else None
    if error is None and job is not None and state is not State.SUCCEEDED:
        error = job.error
    ran = job is not None and job.started_at is not None
    return JobEvent("finish", id=record.id, name=record.name, queue=record.queue,
                    attempt=record.attempt, state=state, status=status, error=error,
                    enqueued_at=record.enqueued_at, run_at=record.run_at,
                    started_at=job.started_at if ran and job is not None else now,
                    finished_at=job.finished_at or now if ran and job is not None else now,
                    worker_id=worker_id, args=None if job is None else job.args,
                    result=job.result if job is not None and state is State.SUCCEEDED
                    else None)


def local_event(kind: EventKind, job: Job[Any]) -> JobEvent:
    """An event of an in-process run (``kind`` "queued", "start" or "finish")."""
    if kind == "queued":
        due_later = job.run_at is not None and job.run_at > time.time()
        state = State.SCHEDULED if due_later else State.READY
    else:
        state = State.RUNNING if kind == "start" else finish_state(job.status)
    finish = kind == "finish"
    return JobEvent(kind, id=job.id, name=job.name, queue=job.queue,
                    attempt=0 if kind == "queued" else job.attempt, state=state,
                    status=job.status if finish else Status.UNKNOWN,
                    error=job.error if finish else None, enqueued_at=job.enqueued_at,
                    run_at=job.run_at, started_at=job.started_at,
                    finished_at=job.finished_at if finish else None, args=job.args,
                    result=job.result if state is State.SUCCEEDED else None)


def finish_state(status: Status) -> State:
    """The state an in-process run ends in: in-process runs are never retried, so a run
    that did not succeed and was not cancelled ends DEAD."""
    if status.outcome is Outcome.DONE:
        return State.SUCCEEDED
    if status.outcome is Outcome.CANCELLED:
        return State.CANCELLED
    return State.DEAD


def wants_line(job: Job[Any] | None, level: int) -> bool:
    """Whether a worker should log the job line at ``level``: not if the logger would drop
    it, nor if the ``logging`` adapter in the chain already logged this run."""
    return job_log.isEnabledFor(level) and not (job is not None and job.ctx.get(LOGGED_KEY))


def log_finish(event: JobEvent, level: int, *, payloads: bool) -> None:
    """Write the job log line for a ``finish`` event (args and result only if ``payloads``)."""
    payload: dict[str, Any] | None = None
    if payloads:
        payload = {"job_args": event.args}
        if event.state is State.SUCCEEDED:
            payload["job_result"] = event.result
    log_run(job_log, level, job_id=event.id, name=event.name, queue=event.queue,
            attempt=event.attempt, status=event.status, duration=event.duration,
            error=event.error, state=event.state.value if event.state is not None else "lost",
            payload=payload)
