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
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from workhorse import codec
from workhorse.app import App
from workhorse.backends.base import (
    WORKER_LOST,
    Backend,
    Handoff,
    HeartbeatReply,
    JobRecord,
    Limits,
    Settlement,
    State,
    WorkerInfo,
)
from workhorse.chain import describe_exception
from workhorse.consume import Consumer
from workhorse.errors import SerializationError, StoreError
from workhorse.job import Job, new_job_id
from workhorse.lease_keeper import LeaseKeeper
from workhorse.options import HandlerOptions
from workhorse.queues import parse_queues, weighted_order
from workhorse.reports import finish_event, log_finish, start_event, wants_line
from workhorse.retry import Action, decide
from workhorse.runner import Runner
from workhorse.settler import Settler
from workhorse.sources.base import Source
from workhorse.status import Outcome, Status
from workhorse.tasks import TaskSet

log = logging.getLogger("workhorse.worker")
T = TypeVar("T")

#: Defaults: a killed worker's jobs run again within ``lease`` + ``reap_interval`` seconds.
DEFAULT_LEASE = 15.0
DEFAULT_REAP_INTERVAL = 5.0

#: With ``prefetch=None``, a worker claims ahead only while its runs average less than this:
#: a job then waits in the buffer for about as long, which is no loss to other workers.
PREFETCH_BELOW = 0.01


@dataclasses.dataclass
class _Running:
    record: JobRecord
    task: asyncio.Task[None] | None = None
    #: Why the run's task was cancelled: "user" (ack as cancelled), "lost" (lease lost:
    #: do nothing) or "shutdown" (release the lease so the job runs again).
    cancel_reason: str | None = None
    #: True once the handler has returned: its slot is free while the store records it.
    slot_freed: bool = False
    #: True while claimed ahead and waiting in the worker's buffer for a free slot.
    buffered: bool = False


class Worker:
    """Runs jobs from the store with up to ``concurrency`` at once.

    ``queues`` maps queue names to weights (``{"critical": 10, "default": 1}``), or lists
    them (weight 1 each); by default, every queue of the app's handlers. Leases last
    ``lease`` seconds and are renewed every ``heartbeat`` seconds while handlers run.
    ``prefetch`` jobs may be claimed ahead of free slots, so a busy worker never waits for
    the store between jobs; by default (None) up to ``concurrency``, and only while runs
    are short (under 10 ms on average), so long jobs are never held back from idle workers.

        worker = wh.Worker(app, concurrency=10, queues={"critical": 10, "default": 1})
        await worker.run()          # until SIGINT/SIGTERM or stop()
    """

    def __init__(
        self, app: App, *, concurrency: int = 10,
        queues: Mapping[str, int] | Iterable[str] | str | None = None,
        lease: float = DEFAULT_LEASE, heartbeat: float | None = None,
        reap_interval: float = DEFAULT_REAP_INTERVAL, worker_ttl: float | None = None,
        poll_interval: float = 1.0, grace: float = 30.0, schedules: bool = True,
        prune_interval: float = 60.0, prefetch: int | None = None,
        log_runs: bool = True, log_payloads: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if prefetch is not None and prefetch < 0:
            raise ValueError("prefetch must be 0 or more")
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
        self.prefetch = prefetch
        #: Log one line per run on ``workhorse.job``; with its args and result only if
        #: ``log_payloads`` (they may hold personal data).
        self.log_runs = log_runs
        self.log_payloads = log_payloads
        #: A moving average of handler run times, for the adaptive prefetch.
        self._run_time = PREFETCH_BELOW
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_job_id()[-8:]}"
        self._info = WorkerInfo(id=self.id, host=socket.gethostname(), pid=os.getpid(),
                                concurrency=concurrency, queues=list(self.queues),
                                started_at=time.time())
        self._runner = Runner(app, threads=concurrency, thread_name="workhorse-worker")
        self._running: dict[str, _Running] = {}
        #: Runs claimed ahead, in claim order, waiting for a free slot.
        self._buffer: deque[_Running] = deque()
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
        #: Sources this worker consumes (``consume``), started and stopped with it.
        self.consumers: list[Consumer] = []
        self._started = False

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
        self._started = True
        for consumer in self.consumers:
            self._loops.spawn(consumer.run(), f"consume:{consumer.source.name}")

    def consume(self, source: Source, handler: str, *, concurrency: int | None = None) -> Consumer:
        """Run ``handler`` once per message of ``source`` (up to ``concurrency`` at once,
        by default the worker's), from ``start()`` until ``stop()``; the run's status acks,
        nacks or dead-letters each message (see ``workhorse.consume``). Returns the consumer,
        whose ``stats`` count what it did."""
        consumer = Consumer(self.app, source, handler,
                            concurrency=concurrency or self.concurrency, grace=self.grace,
                            log_runs=self.log_runs, log_payloads=self.log_payloads,
                            worker_id=self.id)
        self.app.registry.get(handler)  # an unknown handler fails here, not in the worker
        self.consumers.append(consumer)
        if self._started and not self._stopping:
            self._loops.spawn(consumer.run(), f"consume:{source.name}")
        return consumer

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
        grace = self.grace if timeout is None else timeout
        # The consumers stop alongside the runs (a gather starts its tasks at once).
        consumers = asyncio.gather(*(c.stop(graceful=graceful, timeout=grace)
                                     for c in self.consumers))
        await self._release_buffered()
        if graceful:
            await self._runs.wait(grace)
        await consumers
        for running in list(self._running.values()):
            self._cancel_run(running, "shutdown")
        unrecorded = not await self._runs.wait(30.0) or (
            self._settler is not None and not await self._settler.drain(30.0))
        if unrecorded:
            # The store is not answering the releases: give up on them; the leases expire
            # and the reaper of another worker requeues those jobs.
            log.warning("stopping without recording %d runs: the store is away",
                        len(self._running))
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
        """Jobs running now (not counting those claimed ahead)."""
        return len(self._running) - len(self._buffer)

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
            if self._start_buffered():
                # Let the runs just started reach their handlers before this task spends
                # its turn of the loop sending the next claim.
                await asyncio.sleep(0)
            prefetch = self._prefetch()
            room = self.concurrency + prefetch - self._active - len(self._buffer)
            # Claim at once for an idle slot; ahead of need, only in batches worth a trip.
            idle = self._active < self.concurrency
            if room <= 0 or (not idle and room < max(1, prefetch // 2)):
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            order = weighted_order(self.queues)
            self._claiming = True
            try:
                records = await self._persist("claim", _claimer(
                    backend, self.id, order, room, self.lease, limits))
            finally:
                self._claiming = False
            if not records:
                # Idle: wait, leaving a standing claim that a store may fill at once.
                records = await backend.wait_for_work(
                    order, self.poll_interval,
                    handoff=Handoff(self.id, self.lease, limits))
            if self._stopping:
                for record in records:  # claimed as we stopped: hand them straight back
                    await self._persist("release", _releaser(backend, record))
                return
            for record in records:
                old = self._running.get(record.id)
                if old is not None:
                    # Our own earlier run of this job lost its lease and the job came back
                    # to us: that run can record nothing now, so stop it.
                    self._cancel_run(old, "lost")
                running = _Running(record, buffered=True)
                self._running[record.id] = running
                self._buffer.append(running)

    def _prefetch(self) -> int:
        if self.prefetch is not None:
            return self.prefetch
        return self.concurrency if self._run_time < PREFETCH_BELOW else 0

    def _start_buffered(self) -> bool:
        """Start buffered runs while slots are free; whether any started."""
        started = False
        while self._buffer and self._active < self.concurrency:
            running = self._buffer.popleft()
            running.buffered = False
            self._active += 1
            running.task = self._runs.spawn(self._execute(running), f"job:{running.record.id}")
            started = True
        return started

    async def _release_buffered(self) -> None:
        """Hand the jobs claimed ahead back to the store: they never started."""
        backend = self._store() if self._backend is not None else None
        while self._buffer:
            running = self._buffer.popleft()
            self._forget(running)
            if backend is not None:
                await self._persist("release", _releaser(backend, running.record))

    async def _heartbeat_loop(self) -> None:
        # Leases are renewed from a thread of their own (see lease_keeper): a handler that
        # blocks this loop must not let them lapse while its process lives.
        def snapshot() -> Mapping[str, object]:
            return self._running.copy()  # one step under the GIL: safe from the keeper

        def on_reply(reply: HeartbeatReply, seen: Mapping[str, object]) -> None:
            # Only the runs the beat was about (a job may have ended and been claimed again
            # by this worker since: that new run's lease is not lost), and once per run
            # (replies queue up while a handler blocks this loop).
            for job_id in reply.cancel:
                running = self._running.get(job_id)
                if running is not None and running is seen.get(job_id) \
                        and running.cancel_reason is None:
                    self._cancel_run(running, "user")
            for job_id in reply.lost:
                running = self._running.get(job_id)
                if running is not None and running is seen.get(job_id) \
                        and running.cancel_reason is None:
                    log.warning("lease of job %s was lost; abandoning its run", job_id)
                    self._cancel_run(running, "lost")

        keeper = LeaseKeeper(self._store(), self._info, lease=self.lease,
                             interval=self.heartbeat_interval, snapshot=snapshot,
                             on_reply=on_reply, stall_after=min(1.0, self.heartbeat_interval))
        keeper.start()
        try:
            await asyncio.get_running_loop().create_future()  # until the worker stops
        finally:
            await keeper.stop()

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
        #: How the store should record this run; None when it must record nothing.
        settlement: Settlement | None = None
        job: Job[Any] | None = None
        try:
            settlement = self._lost_too_often(record)
            if settlement is None:
                try:
                    job = job_from_record(record)
                except Exception as exc:
                    settlement = Settlement(record.id, token, State.DEAD, Status.BAD_REQUEST,
                                            error=str(exc))
            if self.app.lifecycle_hooks.on_start:
                await self.app.lifecycle_hooks.emit(start_event(record, job, self.id))
            if settlement is not None:
                return
            assert job is not None

            async def checkin(_: Job[Any], message: str) -> None:
                await backend.checkin(record.id, token, message)

            job._checkin_sink = checkin
            started = time.perf_counter()
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
                    settlement = Settlement(record.id, token, State.CANCELLED, Status.CANCELLED)
                elif why == "shutdown":
                    settlement = Settlement(record.id, token, State.READY)
                return
            self._run_time += (time.perf_counter() - started - self._run_time) * 0.1
            self._free_slot(running)
            settlement = await self._settlement(job, token)
        finally:
            self._free_slot(running)
            self.processed += 1
            try:
                await self._finished(record, job, settlement)
            finally:
                if settlement is None:
                    self._forget(running)
                else:
                    # The run's task ends here; the settler records it with others, and the
                    # job stays in _running (its lease renewed) until the store has it.
                    self._submit(running, settlement)

    async def _finished(self, record: JobRecord, job: Job[Any] | None,
                        settlement: Settlement | None) -> None:
        """Report a run that ended: the job log line, then the on_finish hooks."""
        hooks = self.app.lifecycle_hooks
        quiet = settlement is not None and settlement.state in (
            State.SUCCEEDED, State.CANCELLED, State.READY)
        level = logging.INFO if quiet else logging.WARNING
        log_it = self.log_runs and wants_line(job, level)
        if not (hooks.on_finish or log_it):
            return
        event = finish_event(record, job, settlement, self.id)
        if log_it:
            log_finish(event, level, payloads=self.log_payloads)
        if hooks.on_finish:
            await hooks.emit(event)

    def _lost_too_often(self, record: JobRecord) -> Settlement | None:
        """The DEAD settlement of a job whose previous attempt the reaper marked lost, when
        that attempt was its last allowed one; None if the job may run.

        A lost attempt (its worker killed or crashed mid-run) counts as a failed one, as a
        500 would, so a job that kills every worker running it (a poison pill) is retried
        ``retries`` times and then ends DEAD with the error WORKER_LOST, never run again.
        """
        if record.error != WORKER_LOST:
            return None
        decision = decide(Status.INTERNAL_ERROR, record.attempt - 1, self._options(record.name))
        if decision.action is Action.RETRY:
            return None
        return Settlement(record.id, record.token or "", State.DEAD, Status.INTERNAL_ERROR,
                          error=WORKER_LOST, keep=decision.keep)

    def _free_slot(self, running: _Running) -> None:
        # The slot frees when the handler returns, not when the store has recorded it, so a
        # busy worker fetches its next batch while the previous one is being settled.
        if not running.slot_freed:
            running.slot_freed = True
            self._active -= 1
            if not self._stopping:
                self._start_buffered()
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
            except Exception as exc:  # e.g. a cycle (RecursionError), a repr() that raises
                status, job.traceback = Status.INTERNAL_ERROR, None
                job.error = (f"result of type {type(job.result).__name__} cannot be encoded: "
                             f"{describe_exception(exc)}")
        decision = decide(status, job.attempt, options)
        if decision.action is Action.SUCCEED:
            return Settlement(job.id, token, State.SUCCEEDED, status, result=result)
        if decision.action is Action.CANCEL:
            return Settlement(job.id, token, State.CANCELLED, status)
        if decision.action is Action.RETRY:
            run_at = await self._persist("now", self._store().now) + decision.delay
            return Settlement(job.id, token, State.RETRYING, status, run_at=run_at,
                              error=job.error, traceback=job.traceback)
        return Settlement(job.id, token, State.DEAD, status, error=job.error,
                          traceback=job.traceback, keep=decision.keep)

    def _submit(self, running: _Running, settlement: Settlement) -> None:
        assert self._settler is not None

        def settled(stored: bool) -> None:
            self._forget(running)
            if not stored:
                log.warning("job %s: lease lost before its run was recorded",
                            settlement.job_id)

        self._settler.submit(settlement, settled)

    def _forget(self, running: _Running) -> None:
        # By identity: a newer claim of the same job may have replaced this run.
        if self._running.get(running.record.id) is running:
            del self._running[running.record.id]

    def _cancel_run(self, running: _Running, reason: str) -> None:
        if running.buffered:
            # Claimed ahead and not started: nothing to interrupt.
            running.buffered = False
            self._buffer.remove(running)
            record = running.record
            if reason == "lost":
                self._forget(running)
                return
            settlement = (Settlement(record.id, record.token or "", State.CANCELLED,
                                     Status.CANCELLED) if reason == "user"
                          else Settlement(record.id, record.token or "", State.READY))
            self._submit(running, settlement)
            return
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
    """The Job a handler sees for a stored record; ValueError (saying what) if its payload
    or headers are undecodable."""
    if codec.BAD_HEADERS in record.headers:
        raise ValueError(record.headers[codec.BAD_HEADERS])
    try:
        args = codec.decode_args(record.payload)
    except Exception as exc:
        raise ValueError(f"undecodable payload: {exc}") from exc
    return Job(
        name=record.name, args=args, queue=record.queue,
        headers=dict(record.headers), timeout=record.timeout, priority=record.priority,
        attempt=record.attempt, id=record.id, enqueued_at=record.enqueued_at,
        run_at=record.run_at,
    )


def _claimer(backend: Backend, worker_id: str, queues: list[str], limit: int, lease: float,
             limits: dict[str, Limits]) -> Callable[[], Awaitable[list[JobRecord]]]:
    return lambda: backend.claim(worker_id, queues, limit, lease, limits)


def _releaser(backend: Backend, record: JobRecord) -> Callable[[], Awaitable[bool]]:
    return lambda: backend.release(record.id, record.token or "")
