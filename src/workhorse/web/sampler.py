"""The numbers behind the dashboard's charts: throughput, failures and latency, last hour.

``app.admin`` gives counts at one moment, not a history, so the dashboard keeps its own: a
sampler in the web process records the totals by state and the worst queue latency every
``interval`` seconds, and a point of the chart is the difference between two samples (jobs
that became SUCCEEDED, jobs that became DEAD) plus the latency at that moment. The history
starts with the web process; so that a freshly started dashboard does not show an empty hour,
the first sample also fills the time before it from the ``finished_at`` of the most recent
finished jobs (counts only: a past latency is not known).

Deltas of counts miss what retention pruned in the same interval; a point never goes negative.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workhorse.admin import Admin

log = logging.getLogger("workhorse.web")

#: At most this many recent finished jobs of each state are read to fill the first hour.
BACKFILL_JOBS = 1000


@dataclasses.dataclass(frozen=True)
class Point:
    """One interval of the charts, ending at ``t``."""

    #: End of the interval, epoch seconds.
    t: float
    #: Jobs that finished SUCCEEDED during the interval.
    succeeded: int
    #: Jobs that went DEAD during the interval.
    failed: int
    #: Age of the oldest READY job over all queues at ``t``; None where not sampled.
    latency: float | None
    #: Jobs READY, RUNNING and RETRYING at ``t``; None where not sampled.
    ready: int | None
    running: int | None
    retrying: int | None


@dataclasses.dataclass(frozen=True)
class _Totals:
    t: float
    counts: dict[str, int]
    latency: float


class Sampler:
    """Samples ``admin`` every ``interval`` seconds and keeps ``window`` seconds of points."""

    def __init__(self, admin: Admin, *, interval: float = 5.0, window: float = 3600.0) -> None:
        if interval <= 0:
            raise ValueError("the sample interval must be positive")
        self.admin = admin
        self.interval = interval
        self.window = window
        self.points: deque[Point] = deque(maxlen=int(window / interval) + 1)
        self._last: _Totals | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def ensure_running(self) -> None:
        """Start sampling in the running event loop, unless it already is.

        Called on every API request as well as at startup, because a dashboard mounted in
        another Starlette app never receives a lifespan event of its own.
        """
        loop = asyncio.get_running_loop()
        # A task of a loop that has since closed (a test client's) never finishes: replace it.
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._task = loop.create_task(self._loop(),
                                                            name="workhorse-web-sampler")

    async def stop(self) -> None:
        """Stop sampling; idempotent."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sample(self) -> None:
        """Take one sample now and add a point (or, the first time, fill the past hour)."""
        async with self._lock:
            queues = await self.admin.queues()
            counts: dict[str, int] = {}
            for queue in queues:
                for state, count in queue.counts.items():
                    counts[state] = counts.get(state, 0) + count
            totals = _Totals(t=time.time(), counts=counts,
                             latency=max((q.latency for q in queues), default=0.0))
            last, self._last = self._last, totals
            if last is None:
                await self._backfill(totals.t)
                return
            self.points.append(Point(
                t=totals.t,
                succeeded=max(0, counts.get("succeeded", 0) - last.counts.get("succeeded", 0)),
                failed=max(0, counts.get("dead", 0) - last.counts.get("dead", 0)),
                latency=totals.latency, ready=counts.get("ready", 0),
                running=counts.get("running", 0), retrying=counts.get("retrying", 0)))

    async def series(self, step: float | None = None) -> list[Point]:
        """The points of the last ``window`` seconds, oldest first (sampling first if new).

        With a ``step`` longer than the interval, points are merged into one per ``step``
        seconds: counts summed, the worst latency, the last levels.
        """
        if self._last is None:
            await self.sample()
        now = time.time()
        points = [p for p in self.points if p.t >= now - self.window]
        if step is None or step <= self.interval:
            return points
        return merge(points, step, now - self.window)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store may be away for a while; the charts just pause
                log.warning("dashboard sampler: reading the store failed", exc_info=True)
            await asyncio.sleep(self.interval)

    async def _backfill(self, now: float) -> None:
        """Points for the hour before ``now`` from the finished_at of recent finished jobs."""
        start = now - self.window
        steps = int(self.window / self.interval)
        succeeded = [0] * steps
        failed = [0] * steps
        for state, buckets in (("succeeded", succeeded), ("dead", failed)):
            for finished in await self._recent_finish_times(state):
                if start <= finished < now:
                    buckets[min(steps - 1, int((finished - start) / self.interval))] += 1
        self.points.clear()
        for i in range(steps):
            self.points.append(Point(t=start + (i + 1) * self.interval, succeeded=succeeded[i],
                                     failed=failed[i], latency=None, ready=None, running=None,
                                     retrying=None))

    async def _recent_finish_times(self, state: str) -> Iterable[float]:
        first = await self.admin.jobs(state, limit=1)
        offset = max(0, first.total - BACKFILL_JOBS)
        times: list[float] = []
        while offset < first.total:
            page = await self.admin.jobs(state, limit=200, offset=offset)
            if not page.items:
                break
            times.extend(j.finished_at for j in page.items if j.finished_at is not None)
            offset += len(page.items)
        return times


def merge(points: Iterable[Point], step: float, start: float) -> list[Point]:
    """``points`` merged into one per ``step`` seconds after ``start`` (empty steps left out)."""
    merged: dict[int, Point] = {}
    for p in points:
        index = max(0, int((p.t - start) // step))
        before = merged.get(index)
        if before is None:
            merged[index] = dataclasses.replace(p, t=start + (index + 1) * step)
            continue
        latencies = [v for v in (before.latency, p.latency) if v is not None]
        merged[index] = Point(
            t=before.t, succeeded=before.succeeded + p.succeeded,
            failed=before.failed + p.failed,
            latency=max(latencies) if latencies else None,
            ready=p.ready if p.ready is not None else before.ready,
            running=p.running if p.running is not None else before.running,
            retrying=p.retrying if p.retrying is not None else before.retrying)
    return [merged[i] for i in sorted(merged)]
