"""The health adapter: judge the jobs' health by how their runs end, as go-work's
health-check adapter does, and answer a health endpoint with it."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from typing import Any

from workhorse.chain import status_for_exception
from workhorse.job import Job
from workhorse.status import Outcome, Status
from workhorse.types import Adapter, Handler

#: An HTTP answer: status, content type and body.
Response = tuple[int, str, bytes]


def text(status: int, body: str) -> Response:
    """A plain-text response."""
    return status, "text/plain; charset=utf-8", body.encode()


class HealthCheck:
    """The share of recent runs that ended in an error, and whether that is too many.

    A run counts as an error when its status means "may pass later" (408, 429, 500, 503,
    and an unknown status): the signs of a sick dependency or worker. 4xx statuses are the
    job's own fault and 499 a user's cancel; they count as runs, not errors. The check is
    unhealthy once at least ``min_runs`` runs ended in the last ``window`` seconds and more
    than ``max_error_ratio`` of them were errors.

    ``workhorse worker --metrics-port`` serves it at ``path`` (200 while healthy, 503 when
    not, with the counts as JSON). It is kept apart from ``/healthz`` on purpose: a worker
    whose jobs fail because a remote service is down is not cured by restarting it.
    Thread-safe: runs are recorded on the loop, read from the server's thread.
    """

    def __init__(self, *, window: float = 300.0, max_error_ratio: float = 0.5,
                 min_runs: int = 5, path: str = "/healthz/jobs") -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        if not 0 <= max_error_ratio <= 1:
            raise ValueError("max_error_ratio must be between 0 and 1")
        if not path.startswith("/"):
            raise ValueError(f"a path starts with '/', not {path!r}")
        self.window = window
        self.max_error_ratio = max_error_ratio
        self.min_runs = max(1, min_runs)
        self.path = path
        #: (monotonic time, was an error) of each run still inside the window.
        self._runs: collections.deque[tuple[float, bool]] = collections.deque()
        self._errors = 0
        self._lock = threading.Lock()

    def record(self, status: Status) -> None:
        """Count one finished run with ``status``."""
        error = status.outcome is Outcome.RETRY
        with self._lock:
            self._runs.append((time.monotonic(), error))
            self._errors += error
            self._expire()

    def counts(self) -> tuple[int, int]:
        """(runs, errors) in the window."""
        with self._lock:
            self._expire()
            return len(self._runs), self._errors

    @property
    def healthy(self) -> bool:
        """False when too many of enough recent runs were errors."""
        runs, errors = self.counts()
        return runs < self.min_runs or errors / runs <= self.max_error_ratio

    def route(self) -> Response:
        """The endpoint's answer: 200 or 503, with the counts as JSON."""
        runs, errors = self.counts()
        healthy = runs < self.min_runs or errors / runs <= self.max_error_ratio
        body = {"healthy": healthy, "runs": runs, "errors": errors,
                "error_ratio": round(errors / runs, 4) if runs else 0.0,
                "max_error_ratio": self.max_error_ratio, "window": self.window}
        return (200 if healthy else 503), "application/json", \
            (json.dumps(body) + "\n").encode()

    def _expire(self) -> None:
        horizon = time.monotonic() - self.window
        while self._runs and self._runs[0][0] < horizon:
            _, error = self._runs.popleft()
            self._errors -= error


def health(check: HealthCheck) -> Adapter:
    """Record how each run through this chain ends in ``check`` (see ``HealthCheck``).

    The adapter carries the check as ``adapter.health_check``, so the worker's HTTP port
    finds and serves it. Cancelled runs are not counted.
    """

    def adapter(handler: Handler) -> Handler:
        async def checked(job: Job[Any]) -> Any:
            try:
                result = await handler(job)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                check.record(status_for_exception(exc))
                raise
            check.record(job.ctx.status)
            return result

        return checked

    adapter.health_check = check  # type: ignore[attr-defined]
    return adapter
