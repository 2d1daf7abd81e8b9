"""LocalWorker: run jobs in this process, now, later, every interval or per received value."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import datetime
from typing import Any, Literal, Self, overload

from typing_extensions import Unpack

from workhorse.app import App
from workhorse.backends.base import State
from workhorse.consume import Consumer
from workhorse.hooks import EventKind
from workhorse.job import Job
from workhorse.options import HandlerOptionsDict
from workhorse.registry import Registration
from workhorse.reports import finish_state, local_event, log_finish, wants_line
from workhorse.runner import Runner
from workhorse.sources.base import Source
from workhorse.tasks import TaskSet
from workhorse.types import HandlerFunc

log = logging.getLogger("workhorse.local")

#: What ``perform_receive`` accepts: an async iterable or an asyncio.Queue of values.
Receivable = AsyncIterable[Any] | asyncio.Queue[Any]


class LocalWorker:
    """Runs jobs in-process through the same handlers and middleware as the durable worker.

    Args are not serialized, so they may be any Python object. At most ``concurrency``
    runs are in progress at once; further runs wait their turn. Each run is logged on
    ``workhorse.job`` unless ``log_runs=False`` (args and results only with
    ``log_payloads=True``), and calls the app's lifecycle hooks: on_queued as it is
    accepted, on_start, on_finish (in-process runs are never retried).

        async with wh.LocalWorker(app, concurrency=8) as w:
            done = await w.perform(wh.Job("publish", args={...}), sync=True)
    """

    def __init__(self, app: App, *, concurrency: int = 8, name: str = "local",
                 log_runs: bool = True, log_payloads: bool = False) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.app = app
        self.concurrency = concurrency
        self.log_runs = log_runs
        self.log_payloads = log_payloads
        self._runner = Runner(app, threads=concurrency, thread_name=f"workhorse-{name}")
        self._slots: asyncio.Semaphore | None = None
        self._runs = TaskSet(f"{name}-run")
        self._loops = TaskSet(f"{name}-loop")
        self._started = False
        self._consumers: list[Consumer] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start accepting work."""
        self._slots = asyncio.Semaphore(self.concurrency)
        self._started = True

    async def stop(self, *, graceful: bool = True, timeout: float | None = 30.0) -> None:
        """Stop: no new runs; running ones finish within ``timeout`` (if graceful), then are
        cancelled. Afterwards no task or thread of this worker is left."""
        self._started = False
        # Sources first: their runs finish or are nacked, then the sources close.
        await asyncio.gather(*(c.stop(graceful=graceful, timeout=timeout)
                               for c in self._consumers))
        await self._loops.cancel()
        if graceful:
            await self._runs.wait(timeout)
        await self._runs.cancel()
        if not await self._runner.close(timeout):
            log.warning("a sync handler was still running when the worker stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def running(self) -> int:
        """Runs in progress or waiting for a slot."""
        return len(self._runs)

    def register(self, name: str, fn: HandlerFunc,
                 **options: Unpack[HandlerOptionsDict]) -> Registration:
        """Register a handler on the worker's app (go-work's ``Worker.Register``)."""
        return self.app.register(name, fn, **options)

    # -- performing --------------------------------------------------------------------------

    @overload
    async def perform(self, job: Job[Any], *, sync: Literal[True]) -> Job[Any]: ...
    @overload
    async def perform(
        self, job: Job[Any], *, sync: Literal[False] = ...
    ) -> asyncio.Task[Job[Any]]: ...
    @overload
    async def perform(
        self, job: Job[Any], *, sync: bool
    ) -> Job[Any] | asyncio.Task[Job[Any]]: ...

    async def perform(
        self, job: Job[Any], *, sync: bool = False
    ) -> Job[Any] | asyncio.Task[Job[Any]]:
        """Run ``job`` now. With ``sync`` wait and return the finished run; otherwise return
        the task running it. The job passed in is not changed: each run works on a copy."""
        self._check(job)
        run = job.for_run()
        if sync:
            return await self._run(run)
        return self._runs.spawn(self._run(run), f"perform:{job.name}:{run.id}")

    def perform_at(self, job: Job[Any], when: datetime | float) -> asyncio.Task[Job[Any]]:
        """Run ``job`` at ``when`` (a datetime or epoch seconds); returns the task."""
        at = when.timestamp() if isinstance(when, datetime) else float(when)
        return self.perform_in(job, at - time.time())

    def perform_in(self, job: Job[Any], delay: float) -> asyncio.Task[Job[Any]]:
        """Run ``job`` after ``delay`` seconds; returns the task."""
        self._check(job)
        run = job.for_run()
        run.run_at = time.time() + max(delay, 0.0)

        async def later() -> Job[Any]:
            await self._emit("queued", run)
            await asyncio.sleep(max(delay, 0.0))
            return await self._run(run, queued=True)

        return self._runs.spawn(later(), f"perform_in:{job.name}:{run.id}")

    def perform_every(self, job: Job[Any], interval: float, *,
                      sync: bool = False) -> asyncio.Task[None]:
        """Run ``job`` every ``interval`` seconds until the worker stops.

        ``sync=True``: one run at a time; the next starts at the next tick after the previous
        run ended, so runs never overlap. ``sync=False``: a run starts on every tick, so runs
        overlap when one outlasts the interval. Each run is a copy with a new id.
        """
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._check(job)

        async def loop() -> None:
            loop_time = asyncio.get_running_loop().time
            next_tick = loop_time()
            while True:
                run = job.for_run(new_id=True)
                if sync:
                    await self._run(run)
                else:
                    self._runs.spawn(self._run(run), f"every:{job.name}:{run.id}")
                next_tick += interval
                # After a long sync run, skip the ticks it missed rather than bursting.
                next_tick = max(next_tick, loop_time())
                await asyncio.sleep(next_tick - loop_time())

        return self._loops.spawn(loop(), f"every:{job.name}")

    def perform_receive(self, job: Job[Any], source: Receivable | Source, *,
                        sync: bool = False) -> asyncio.Task[None]:
        """Run ``job`` once per value from ``source``; the value is the run's ``job.message``.

        ``source`` is an async iterable (the task ends once it is exhausted and its runs are
        done) or an asyncio.Queue (read until the worker stops). ``sync=True`` runs one value
        at a time, in order; otherwise up to ``concurrency`` at once.

        A ``workhorse.sources.Source`` is consumed as ``Worker.consume`` does: each message
        is acked, nacked or dead-lettered by its run's status and the handler's retries (its
        body is also the run's args when it is a JSON object); the worker's stop finishes or
        nacks the runs in flight and closes the source.
        """
        self._check(job)
        if isinstance(source, Source):
            consumer = Consumer(self.app, source, job.name,
                                concurrency=1 if sync else self.concurrency, template=job,
                                log_runs=self.log_runs, log_payloads=self.log_payloads)
            self._consumers.append(consumer)
            return self._loops.spawn(consumer.run(), f"receive:{job.name}:{source.name}")

        async def receive() -> None:
            pending: set[asyncio.Task[Job[Any]]] = set()
            async for value, done in _values(source):
                run = job.for_run(new_id=True)
                run.message = value
                if sync:
                    try:
                        await self._run(run)
                    finally:
                        done()
                    continue
                # Take a slot before reading the next value: back-pressure on the source.
                assert self._slots is not None
                await self._slots.acquire()
                task = self._runs.spawn(self._run(run, holding_slot=True),
                                        f"receive:{job.name}:{run.id}")
                pending.add(task)
                task.add_done_callback(pending.discard)
                task.add_done_callback(_call_when_done(done))
            if pending:
                await asyncio.wait(pending)

        return self._loops.spawn(receive(), f"receive:{job.name}")

    # -- internals --------------------------------------------------------------------------

    def _check(self, job: Job[Any]) -> None:
        if not self._started:
            raise RuntimeError("LocalWorker is not started: use `async with` or await start()")
        self.app.registry.get(job.name)  # raises UnknownHandlerError at once, in-process

    async def _run(self, job: Job[Any], *, holding_slot: bool = False,
                   queued: bool = False) -> Job[Any]:
        assert self._slots is not None
        if not queued:
            await self._emit("queued", job)
        if not holding_slot:
            await self._slots.acquire()
        try:
            job.attempt += 1
            await self._emit("start", job)
            try:
                return await self._runner.run(job)
            finally:
                await self._finished(job)
        finally:
            self._slots.release()

    async def _emit(self, kind: EventKind, job: Job[Any]) -> None:
        hooks = self.app.lifecycle_hooks
        if hooks.of(kind):
            await hooks.emit(local_event(kind, job))

    async def _finished(self, job: Job[Any]) -> None:
        """Report a run that ended: the job log line, then the on_finish hooks."""
        failed = finish_state(job.status) is State.DEAD
        level = logging.WARNING if failed else logging.INFO
        if self.log_runs and wants_line(job, level):
            log_finish(local_event("finish", job), level, payloads=self.log_payloads)
        await self._emit("finish", job)


def _call_when_done(callback: Callable[[], None]) -> Callable[[asyncio.Task[Any]], None]:
    return lambda _task: callback()


def _nothing() -> None:
    return None


async def _values(source: Receivable) -> AsyncIterator[tuple[Any, Callable[[], None]]]:
    """Each value of ``source`` with the callback to call once its run is over."""
    if isinstance(source, asyncio.Queue):
        while True:
            yield await source.get(), source.task_done
    else:
        async for value in source:
            yield value, _nothing
