"""The durable Worker: fetch jobs from the store, run them, and settle each run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from workhorse import codec
from workhorse.app import App
from workhorse.backends.base import Backend, JobRecord, Limits, Settlement, State, WorkerInfo
from workhorse.errors import SerializationError, StoreError
from workhorse.job import Job, new_job_id
from workhorse.options import HandlerOptions
from workhorse.queues import parse_queues, weighted_order
from workhorse.retry import Action, decide
from workhorse.runner import Runner
from workhorse.settler import Settler
from workhorse.status import Outcome, Status
from workhorse.tasks import TaskSet

log = logging.getLogger("workhorse.worker")
T = TypeVar("T")

#: Defaults: a killed worker's jobs run again within ``lease`` + ``reap_interval`` seconds.
DEFAULT_LEASE = 15.0
DEFAULT_REAP_INTERVAL = 5.0


@dataclasses.dataclass
class _Running:
    record: JobRecord
    task: asyncio.Task[None] | None = None
    #: Why the run's task was cancelled: "user" (ack as cancelled), "lost" (lease lost:
    #: do nothing) or "shutdown" (release the lease so the job runs again).
    cancel_reason: str | None = None
    #: True once the handler has returned: its slot is free while the store records it.
    slot_freed: bool = False


class Worker:
    """Runs jobs from the store with up to ``concurrency`` at once.

    ``queues`` maps queue names to weights (``{"critical": 10, "default": 1}``), or lists
    them (weight 1 each); by default, every queue of the app's handlers. Leases last
    ``lease`` seconds and are renewed every ``heartbeat`` seconds while handlers run.

        worker = wh.Worker(app, concurrency=10, queues={"critical": 10, "default": 1})
        await worker.run()          # until SIGINT/SIGTERM or stop()
    """

    def __init__(
        self, app: App, *, concurrency: int = 10,
        queues: Mapping[str, int] | Iterable[str] | str | None = None,
        lease: float = DEFAULT_LEASE, heartbeat: float | None = None,
        reap_interval: float = DEFAULT_REAP_INTERVAL, worker_ttl: float | None = None,
        poll_interval: float = 1.0, grace: float = 30.0, schedules: bool = True,
        prune_interval: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.app = app
        self.concurrency = concurrency
        default_queues = [r.options.queue for r in app.registry] or ["default"]
        self.queues = parse_queues(queues, default_queues)
        self.lease = lease
        self.heartbeat_interval = heartbeat if heartbeat is not None else lease / 3
        self.reap_interval = reap_interval
        self.worker_ttl = worker_ttl if worker_ttl is not None else 3 * self.heartbeat_interval
        self.poll_interval = poll_interval
        self.grace = grace
        self.run_schedules = schedules
        self.prune_interval = prune_interval
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_job_id()[-8:]}"
        self._info = WorkerInfo(id=self.id, host=socket.gethostname(), pid=os.getpid(),
                                concurrency=concurrency, queues=list(self.queues),
                                started_at=time.time())
        self._runner = Runner(app, threads=concurrency, thread_name="workhorse-worker")
        self._running: dict[str, _Running] = {}
        #: Runs whose handler has not returned yet; ``concurrency`` bounds this.
        self._active = 0
        self._runs = TaskSet("worker-run")
        self._loops = TaskSet("worker")
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._backend: Backend | None = None
        self._settler: Settler | None = None
        self._fetch_task: asyncio.Task[None] | None = None
        #: True while a claim is in flight: cancelling it then could strand leased jobs.
        self._claiming = False
        #: Jobs this worker has started and settled, for summaries.
        self.processed = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, announce the worker and start fetching; returns at once."""
        self._backend = await self.app.backend()
        await self._backend.heartbeat(self._info, [], self.lease)
        self._settler = Settler(self._backend, self._persist)
        self._loops.spawn(self._settler.run(), "settle")
        self._fetch_task = self._loops.spawn(self._fetch_loop(), "fetch")
        self._loops.spawn(self._heartbeat_loop(), "heartbeat")
        self._loops.spawn(self._reap_loop(), "reap")
        if self.run_schedules and self.app.schedules:
            self._loops.spawn(self._schedule_loop(), "schedule")
        if self.prune_interval > 0:
            self._loops.spawn(self._prune_loop(), "prune")

    async def run(self) -> None:
        """Start, then run until stopped; SIGINT/SIGTERM stop gracefully (a second signal
        stops at once)."""
        await self.start()
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal)
                handled.append(sig)
        try:
            await self._stopped.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        graceful = not self._stopping
        log.info("worker %s: %s stop requested", self.id, "graceful" if graceful else "immediate")
        asyncio.get_running_loop().create_task(
            self.stop(graceful=graceful), name="worker:stop")

    async def stop(self, *, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop fetching; running jobs get ``timeout`` (default ``grace``) seconds to finish
        if ``graceful``; the rest are cancelled and their leases released so they run again.
        """
        if self._stopping and graceful:
            await self._stopped.wait()
            return
        self._stopping = True
        self._slot_freed.set()
        if graceful:
            await self._runs.wait(self.grace if timeout is None else timeout)
        for running in list(self._running.values()):
            self._cancel_run(running, "shutdown")
        if not await self._runs.wait(30.0):
            # The store is not answering the releases: give up on them; the leases expire
            # and the reaper of another worker requeues those jobs.
            log.warning("stopping without recording %d runs: the store is away", len(self._runs))
            await self._runs.cancel()
        if self._fetch_task is not None and self._claiming:
            # Let the claim in flight return: the fetch loop then hands its jobs back.
            await asyncio.wait({self._fetch_task}, timeout=10.0)
        await self._loops.cancel()
        if self._backend is not None:
            with contextlib.suppress(Exception):
                await self._backend.unregister(self.id)
        await self._runner.close(timeout=5.0)
        self._stopped.set()

    async def stop_now(self) -> None:
        """Stop at once: cancel running jobs and release their leases."""
        await self.stop(graceful=False)

    @property
    def running(self) -> int:
        """Jobs running now."""
        return len(self._running)

    # -- loops ------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        pause = 0.05
        while not self._stopping:
            try:
                await self._fetch()
                return
            except Exception:
                # A bug or an unexpected store error must not leave a live worker that no
                # longer fetches: log it and fetch again after a pause.
                log.exception("fetching failed; retrying in %.2fs", pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _fetch(self) -> None:
        backend = self._store()
        limits = self._limits()
        while not self._stopping:
            free = self.concurrency - self._active
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            order = weighted_order(self.queues)
            self._claiming = True
            try:
                records = await self._persist("claim", _claimer(
                    backend, self.id, order, free, self.lease, limits))
            finally:
                self._claiming = False
            if self._stopping:
                for record in records:  # claimed as we stopped: hand them straight back
                    await self._persist("release", _releaser(backend, record))
                return
            for record in records:
                running = _Running(record)
                self._running[record.id] = running
                self._active += 1
                running.task = self._runs.spawn(self._execute(running), f"job:{record.id}")
            if not records:
                await backend.wait_for_work(order, self.poll_interval)

    async def _heartbeat_loop(self) -> None:
        backend = self._store()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                reply = await backend.heartbeat(self._info, list(self._running), self.lease)
            except Exception as exc:  # the store may be away; the next beat tries again
                log.warning("heartbeat failed: %s", exc)
                continue
            for job_id in reply.cancel:
                if job_id in self._running:
                    self._cancel_run(self._running[job_id], "user")
            for job_id in reply.lost:
                if job_id in self._running:
                    log.warning("lease of job %s was lost; abandoning its run", job_id)
                    self._cancel_run(self._running[job_id], "lost")

    async def _reap_loop(self) -> None:
        backend = self._store()
        while True:
            try:
                requeued = await backend.reap(self.worker_ttl)
                if requeued:
                    log.warning("requeued %d jobs of lost workers or expired leases", requeued)
            except Exception as exc:
                log.warning("reap failed: %s", exc)
            await asyncio.sleep(self.reap_interval)

    async def _schedule_loop(self) -> None:
        backend = self._store()
        enqueued: dict[str, float] = {}
        while True:
            try:
                now = await backend.now()
                for schedule in self.app.schedules:
                    tick = schedule.next_tick(now)
                    if enqueued.get(schedule.key) != tick:
                        await self.app.enqueue(schedule.name, schedule.args, queue=schedule.queue,
                                               at=tick, idempotency_key=schedule.tick_key(tick))
                        enqueued[schedule.key] = tick
                wake = min(enqueued.values(), default=now + 1.0)
                await asyncio.sleep(min(1.0, max(0.01, wake - now)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduler failed: %s", exc)
                await asyncio.sleep(1.0)

    async def _prune_loop(self) -> None:
        while True:
            try:
                await self.app.prune()
            except Exception as exc:
                log.warning("retention prune failed: %s", exc)
            await asyncio.sleep(self.prune_interval)

    # -- one job ----------------------------------------------------------------------------

    async def _execute(self, running: _Running) -> None:
        record = running.record
        backend = self._store()
        token = record.token or ""
        try:
            try:
                job = job_from_record(record)
            except Exception as exc:
                await self._finish(Settlement(
                    record.id, token, State.DEAD, Status.BAD_REQUEST,
                    error=f"undecodable payload: {exc}"))
                return

            async def checkin(_: Job[Any], message: str) -> None:
                await backend.checkin(record.id, token, message)

            job._checkin_sink = checkin
            try:
                await self._runner.run(job)
            except asyncio.CancelledError:
                why = running.cancel_reason
                if why is None:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                if why == "user":
                    await self._finish(Settlement(record.id, token, State.CANCELLED,
                                                  Status.CANCELLED))
                elif why == "shutdown":
                    await self._finish(Settlement(record.id, token, State.READY))
                return
            self._free_slot(running)
            await self._finish(await self._settlement(job, token))
        finally:
            self._free_slot(running)
            self._running.pop(record.id, None)
            self.processed += 1

    def _free_slot(self, running: _Running) -> None:
        # The slot frees when the handler returns, not when the store has recorded it, so a
        # busy worker fetches its next batch while the previous one is being settled.
        if not running.slot_freed:
            running.slot_freed = True
            self._active -= 1
            self._slot_freed.set()

    async def _settlement(self, job: Job[Any], token: str) -> Settlement:
        """How the store should record the run that just ended (the retry policy decides)."""
        options = self._options(job.name)
        status = job.status
        result: bytes | None = None
        if status.outcome is Outcome.DONE:
            try:
                result = codec.encode(job.result, what="result")
            except SerializationError as exc:
                status, job.error, job.traceback = Status.INTERNAL_ERROR, str(exc), None
        decision = decide(status, job.attempt, options)
        if decision.action is Action.SUCCEED:
            return Settlement(job.id, token, State.SUCCEEDED, status, result=result)
        if decision.action is Action.CANCEL:
            return Settlement(job.id, token, State.CANCELLED, status)
        if decision.action is Action.RETRY:
            run_at = await self._store().now() + decision.delay
            return Settlement(job.id, token, State.RETRYING, status, run_at=run_at,
                              error=job.error, traceback=job.traceback)
        return Settlement(job.id, token, State.DEAD, status, error=job.error,
                          traceback=job.traceback, keep=decision.keep)

    async def _finish(self, settlement: Settlement) -> None:
        assert self._settler is not None
        if not await self._settler.settle(settlement):
            log.warning("job %s: lease lost before its run was recorded", settlement.job_id)

    def _cancel_run(self, running: _Running, reason: str) -> None:
        if running.cancel_reason is None and running.task is not None:
            running.cancel_reason = reason
            running.task.cancel()

    # -- helpers ----------------------------------------------------------------------------

    def _store(self) -> Backend:
        assert self._backend is not None, "the worker is not started"
        return self._backend

    def _options(self, name: str) -> HandlerOptions:
        if name in self.app.registry:
            return self.app.registry.get(name).options
        return HandlerOptions()

    def _limits(self) -> dict[str, Limits]:
        limits: dict[str, Limits] = {}
        for registration in self.app.registry:
            options = registration.options
            if options.max_concurrency is None and options.rate_limit is None:
                continue
            rate = options.rate_limit
            limits[registration.name] = Limits(
                max_concurrency=options.max_concurrency,
                rate=rate.per_second if rate else None,
                burst=rate.burst if rate else 1)
        return limits

    async def _persist(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a store call, retrying with capped backoff while the store is unavailable."""
        pause = 0.05
        while True:
            try:
                return await call()
            except (StoreError, OSError) as exc:
                log.warning("store unavailable during %s (%s); retrying in %.2fs",
                            what, exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)


def job_from_record(record: JobRecord) -> Job[Any]:
    """The Job a handler sees for a stored record; raises if the payload is undecodable."""
    return Job(
        name=record.name, args=codec.decode(record.payload), queue=record.queue,
        headers=dict(record.headers), timeout=record.timeout, priority=record.priority,
        attempt=record.attempt, id=record.id, enqueued_at=record.enqueued_at,
        run_at=record.run_at,
    )


def _claimer(backend: Backend, worker_id: str, queues: list[str], limit: int, lease: float,
             limits: dict[str, Limits]) -> Callable[[], Awaitable[list[JobRecord]]]:
    return lambda: backend.claim(worker_id, queues, limit, lease, limits)


def _releaser(backend: Backend, record: JobRecord) -> Callable[[], Awaitable[bool]]:
    return lambda: backend.release(record.id, record.token or "")
