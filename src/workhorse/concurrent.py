"""ConcurrentJob: one job run by up to N workers at once, with the load ramped up."""

from __future__ import annotations

import asyncio
from typing import Any

from workhorse.app import App
from workhorse.job import Job
from workhorse.local import LocalWorker
from workhorse.tasks import TaskSet


class ConcurrentJob:
    """Run ``job`` on up to ``max_workers`` workers, once each or every ``every`` seconds.

    Workers are added one per ``start_interval`` seconds so the load ramps up instead of
    arriving all at once. With ``every``, each worker runs the job on that interval without
    overlapping itself; without it, each worker runs the job once and ends.

        cj = wh.ConcurrentJob(app, wh.Job("poll"), max_workers=8, every=1.0, start_interval=0.2)
        await cj.start(); ...; await cj.stop()
    """

    def __init__(self, app: App, job: Job[Any], max_workers: int, *,
                 every: float | None = None, start_interval: float = 0.0) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if every is not None and every <= 0:
            raise ValueError("every must be positive")
        if start_interval < 0:
            raise ValueError("start_interval must be >= 0")
        app.registry.get(job.name)
        self.app = app
        self.job = job
        self.max_workers = max_workers
        self.every = every
        self.start_interval = start_interval
        self._worker = LocalWorker(app, concurrency=max_workers, name="concurrent")
        self._tasks = TaskSet("concurrent")
        self._running = 0
        #: Set once every worker has been started.
        self.ramped = asyncio.Event()

    @property
    def running_workers(self) -> int:
        """Workers started and not yet finished."""
        return self._running

    async def start(self) -> None:
        """Start ramping up workers; returns at once."""
        await self._worker.start()
        self._tasks.spawn(self._ramp(), "ramp")

    async def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker has finished (for a run-once job); False on timeout."""
        return await self._tasks.wait(timeout)

    async def stop(self, *, timeout: float | None = 30.0) -> None:
        """Stop the ramp and every worker; running runs get ``timeout`` seconds to finish."""
        await self._tasks.cancel()
        await self._worker.stop(timeout=timeout)

    async def __aenter__(self) -> ConcurrentJob:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _ramp(self) -> None:
        for index in range(self.max_workers):
            if index:
                await asyncio.sleep(self.start_interval)
            self._running += 1
            self._tasks.spawn(self._work(), f"worker-{index}")
        self.ramped.set()

    async def _work(self) -> None:
        try:
            if self.every is None:
                await self._worker.perform(self.job.for_run(new_id=True), sync=True)
            else:
                await self._worker.perform_every(self.job, self.every, sync=True)
        finally:
            self._running -= 1
