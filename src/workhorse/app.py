"""The App: the handler registry, the middleware and the producer/control API."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import Unpack

from workhorse.backends import create_backend
from workhorse.backends.base import Backend, Enqueued, EnqueueOutcome, NewJob, State
from workhorse.errors import ConfigurationError, QueueFull
from workhorse.hooks import Hook, Hooks, JobEvent
from workhorse.job import DEFAULT_QUEUE, Job
from workhorse.options import HandlerOptionsDict
from workhorse.producer import EnqueueRequest, build_new_job
from workhorse.ref import JobRef
from workhorse.registry import Registration, Registry
from workhorse.results import Drop, ResultHub, ResultSubscription, close_subscriptions
from workhorse.schedule import Schedule
from workhorse.types import Adapter, HandlerFunc

if TYPE_CHECKING:
    from workhorse.admin import Admin
    from workhorse.telemetry.tracing import Tracing

F = TypeVar("F", bound=HandlerFunc)
T = TypeVar("T")

#: Used when neither a URL nor $WORKHORSE_URL is given.
DEFAULT_URL = "sqlite:///workhorse.db"


@dataclasses.dataclass(frozen=True)
class Retention:
    """How long finished jobs are kept: ``ttl`` seconds, at most ``max_entries`` of them."""

    ttl: float | None = 7 * 86400
    max_entries: int | None = 100_000


class App:
    """The entry point: register handlers and middleware, enqueue and control jobs.

    ``url`` picks the store: ``sqlite:///file.db`` (the default), ``memory://``,
    ``redis://host:6379/0`` or ``postgresql://...``. Without one, ``$WORKHORSE_URL`` is used,
    then ``sqlite:///workhorse.db``. Nothing connects until the store is first needed.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or os.environ.get("WORKHORSE_URL") or DEFAULT_URL
        self.registry = Registry()
        self._adapters: list[Adapter] = []
        #: Bumped on every change to handlers or middleware, so cached chains are rebuilt.
        self.generation = 0
        self.schedules: list[Schedule] = []
        self.max_sizes: dict[str, int] = {}
        self.retention_policy = Retention()
        #: The lifecycle hooks registered with ``hooks()``.
        self.lifecycle_hooks = Hooks()
        self._backend: Backend | None = None
        self._opened = False
        #: Spans for enqueues and runs, once ``instrument(tracer_provider=...)`` was called.
        self.tracing: Tracing | None = None
        #: Per event loop, the fan-out of result subscriptions (see results.py).
        self._result_hubs: dict[asyncio.AbstractEventLoop, ResultHub] = {}

    # -- handlers and middleware -------------------------------------------------------------

    @property
    def adapters(self) -> tuple[Adapter, ...]:
        """The adapters applied to every job, outermost first."""
        return tuple(self._adapters)

    def use(self, *adapters: Adapter) -> None:
        """Add adapters for every job; the first given runs outermost."""
        for adapter in adapters:
            if not callable(adapter):
                raise TypeError(f"an adapter must be callable, not {adapter!r}")
        self._adapters.extend(adapters)
        self.generation += 1

    def register(self, name: str, fn: HandlerFunc,
                 **options: Unpack[HandlerOptionsDict]) -> Registration:
        """Register ``fn`` as the handler for jobs named ``name`` (options as for ``handler``)."""
        registration = self.registry.register(name, fn, dict(options))
        self.generation += 1
        self.schedules = [s for s in self.schedules if s.name != name or s.args is not None]
        if registration.options.cron is not None:
            self.schedules.append(Schedule(name, cron=registration.options.cron))
        if registration.options.every is not None:
            self.schedules.append(Schedule(name, interval=registration.options.every))
        return registration

    def handler(self, name: str | None = None,
                **options: Unpack[HandlerOptionsDict]) -> Callable[[F], F]:
        """Decorator registering a handler; ``name`` defaults to the function's name.

        Options: ``queue``, ``retries``, ``timeout``, ``priority``, ``max_concurrency``,
        ``rate_limit`` ("20/s"), ``backoff``, ``cron``, ``every``, ``unique``, ``skip_dead``,
        ``args_type`` and ``adapters`` (per-handler middleware, inside the app's).
        Invalid options raise ConfigurationError here, not when a job runs.
        """

        def decorate(fn: F) -> F:
            self.register(name or str(getattr(fn, "__name__", "")), fn, **options)
            return fn

        return decorate

    # -- configuration ------------------------------------------------------------------------

    def cron(self, expression: str, name: str, args: Any = None, *,
             queue: str | None = None) -> Schedule:
        """Enqueue ``name`` on every tick of a 6-field cron (sec min hour dom mon dow, UTC),
        once per tick however many workers run."""
        schedule = Schedule(name, cron=expression, args=args, queue=queue)
        self.schedules.append(schedule)
        return schedule

    def every(self, seconds: float, name: str, args: Any = None, *,
              queue: str | None = None) -> Schedule:
        """Enqueue ``name`` every ``seconds`` (ticks on multiples of it since the epoch),
        once per tick however many workers run."""
        schedule = Schedule(name, interval=seconds, args=args, queue=queue)
        self.schedules.append(schedule)
        return schedule

    def queue(self, name: str, *, max_size: int | None = None) -> None:
        """Configure a queue: ``max_size`` bounds its live jobs (enqueue raises QueueFull)."""
        if max_size is None:
            self.max_sizes.pop(name, None)
        elif max_size < 1:
            raise ValueError("max_size must be at least 1")
        else:
            self.max_sizes[name] = max_size

    def retention(self, ttl: float | None = 7 * 86400,
                  max_entries: int | None = 100_000) -> None:
        """Keep finished jobs ``ttl`` seconds and at most ``max_entries``; workers prune the
        rest. Live jobs are never pruned."""
        self.retention_policy = Retention(ttl=ttl, max_entries=max_entries)

    def hooks(self, *, on_queued: Hook | None = None, on_start: Hook | None = None,
              on_finish: Hook | None = None) -> None:
        """Register lifecycle hooks, each called with a ``JobEvent`` (sync or async).

        ``on_queued``: in the producer, once the store accepted a new job (not for
        duplicates; with ``connection=``, once written in the caller's transaction, which
        may still roll back). ``on_start``: in the worker, as a run starts. ``on_finish``:
        as a run's outcome is known, once per attempt, before the store records it. The
        LocalWorker calls them too. Calls add to the hooks given before; hooks of one kind
        are called in registration order, and one that raises is logged and does not affect
        the job.
        """
        self.lifecycle_hooks.add(on_queued, on_start, on_finish)

    def instrument(self, *, meter_provider: Any = None, tracer_provider: Any = None) -> None:
        """Report metrics through an OpenTelemetry ``meter_provider`` and trace enqueues
        and runs through a ``tracer_provider`` (install workhorse[otel]). Call it once,
        before workers start; each argument left None leaves that half off."""
        from workhorse.telemetry import install

        install(self, meter_provider=meter_provider, tracer_provider=tracer_provider)

    def set_tracing(self, tracing: Tracing | None) -> None:
        """Use ``tracing`` for every enqueue and run from now on (None: stop tracing)."""
        self.tracing = tracing
        self.generation += 1

    # -- the store ----------------------------------------------------------------------------

    async def backend(self) -> Backend:
        """The store, opened on first use."""
        if self._backend is None:
            self._backend = create_backend(self.url)
        if not self._opened:
            await self._backend.open()
            self._opened = True
        return self._backend

    async def close(self) -> None:
        """Close the store's connections and threads."""
        await close_subscriptions(self)
        backend, self._backend = self._backend, None
        self._opened = False
        if backend is not None:
            await backend.close()

    # -- producing ----------------------------------------------------------------------------

    async def enqueue(
        self, name: str, args: Any = None, *, queue: str | None = None,
        delay: float | None = None, at: datetime | float | None = None,
        priority: int | None = None, timeout: float | None = None,
        headers: Mapping[str, str] | None = None, unique: bool | None = None,
        unique_key: str | None = None, idempotency_key: str | None = None,
        wait: float | None = None, connection: object | None = None,
    ) -> JobRef | None:
        """Enqueue a job; returns its ref, or None if it is a duplicate of a live unique job.

        ``delay`` (seconds) or ``at`` (datetime or epoch seconds) schedule it. ``unique`` (or
        an explicit ``unique_key``) allows one live job per name and args; a repeated
        ``idempotency_key`` returns the first job's ref. Args that do not serialize raise
        SerializationError and nothing is written. If the queue is at its ``max_size``,
        raises QueueFull, or with ``wait`` retries for up to that many seconds first.

        ``connection`` (a ``psycopg.AsyncConnection`` on PostgreSQL, a ``sqlite3.Connection``
        on SQLite) writes the job in the caller's open transaction, the outbox pattern: it
        exists and runs once the caller commits, and never existed if it rolls back.
        """
        request = EnqueueRequest(name, args, queue=queue, delay=delay, at=at, priority=priority,
                                 timeout=timeout, headers=headers, unique=unique,
                                 unique_key=unique_key, idempotency_key=idempotency_key)
        (ref,) = await self.enqueue_many([request], wait=wait, connection=connection)
        return ref

    async def enqueue_many(
        self, jobs: Iterable[EnqueueRequest | Job[Any] | Mapping[str, Any]], *,
        wait: float | None = None, connection: object | None = None,
    ) -> list[JobRef | None]:
        """Enqueue several jobs in one round trip and one atomic step; refs in order.

        ``wait`` and ``connection`` are as for ``enqueue``, and exclude each other.
        """
        if wait and connection is not None:
            # Retrying would keep the caller's transaction open while we sleep.
            raise ConfigurationError("wait= cannot be combined with connection=")
        requests = [_as_request(job) for job in jobs]
        new_jobs = [build_new_job(request, self.registry) for request in requests]
        backend = await self.backend()
        if any(request.delay is not None for request in requests):
            # A delay counts from the store's clock, as every due time does, so a producer
            # whose clock is off schedules nothing early or late. (The jobs were built
            # first so that bad args fail before the store is asked anything.)
            now = await backend.now()
            new_jobs = [job if request.delay is None
                        else dataclasses.replace(job, run_at=now + request.delay)
                        for job, request in zip(new_jobs, requests, strict=True)]
        if self.tracing is None:
            results = await self._write(backend, new_jobs, wait, connection)
        else:
            with self.tracing.enqueuing(new_jobs) as traced:
                new_jobs = traced.jobs
                results = await self._write(backend, new_jobs, wait, connection)
                traced.outcomes(results)
        if self.lifecycle_hooks.on_queued:
            await self._queued(requests, new_jobs, results)
        return [None if r.outcome is EnqueueOutcome.DUPLICATE else JobRef(self, r.id)
                for r in results]

    async def _write(self, backend: Backend, new_jobs: list[NewJob], wait: float | None,
                     connection: object | None) -> list[Enqueued]:
        """Write ``new_jobs``; a full queue is retried for up to ``wait`` seconds."""
        sizes = {q: n for q, n in self.max_sizes.items() if any(j.queue == q for j in new_jobs)}
        deadline = time.monotonic() + (wait or 0.0)
        pause = 0.01
        while True:
            try:
                return await backend.enqueue(new_jobs, max_sizes=sizes or None,
                                             connection=connection)
            except QueueFull:
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)

    async def _queued(self, requests: list[EnqueueRequest], new_jobs: list[NewJob],
                      results: list[Enqueued]) -> None:
        accepted_at = time.time()
        for request, job, result in zip(requests, new_jobs, results, strict=True):
            if result.outcome is EnqueueOutcome.CREATED:
                await self.lifecycle_hooks.emit(JobEvent(
                    "queued", id=result.id, name=job.name, queue=job.queue, attempt=0,
                    state=result.state, enqueued_at=accepted_at, run_at=job.run_at,
                    args=request.args))

    def enqueue_sync(self, name: str, args: Any = None, **options: Any) -> JobRef | None:
        """``enqueue`` for sync callers (Django, Flask, scripts): same arguments."""
        return self._run_sync(self.enqueue(name, args, **options))

    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        coro.close()
        raise RuntimeError("called from a running event loop: await the async method instead")

    def ref(self, job_id: str) -> JobRef:
        """A ref to an existing job by id."""
        return JobRef(self, job_id)

    # -- control ------------------------------------------------------------------------------

    @property
    def admin(self) -> Admin:
        """The admin API: queues, workers, job lists, retry, delete, purge, snapshots."""
        from workhorse.admin import Admin  # lazily: admin.py refers back to App

        return Admin(self)

    async def cancel(self, job_id: str) -> State | None:
        """Cancel a job: a queued one is removed (CANCELLED, 499) at once; a running one is
        cancelled in its worker at the next heartbeat. Returns the state, None if unknown."""
        return await (await self.backend()).cancel(job_id)

    async def cancel_all(self, *, queue: str | None = None, name: str | None = None) -> int:
        """Cancel every live job of ``queue`` and/or handler ``name``; returns how many."""
        return await (await self.backend()).cancel_all(queue=queue, name=name)

    async def pause(self, queue: str) -> None:
        """Stop workers from fetching ``queue`` (running jobs finish)."""
        await (await self.backend()).pause(queue)

    async def resume(self, queue: str) -> None:
        """Let workers fetch ``queue`` again."""
        await (await self.backend()).resume(queue)

    async def paused(self) -> set[str]:
        """The paused queues."""
        return await (await self.backend()).paused()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no job is ready or running (scheduled ones may remain); False on
        timeout."""
        backend = await self.backend()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            stats = await backend.queue_stats()
            if not any(s.counts.get(State.READY, 0) or s.counts.get(State.RUNNING, 0)
                       for s in stats):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            # Polling: "idle" spans every queue and process, and no store notifies it.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    def subscribe_results(
        self, buffer: int = 100, drop: Drop = Drop.NEWEST, *,
        job_ids: Iterable[str] | None = None, names: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
    ) -> ResultSubscription:
        """Subscribe to the results of jobs finishing from now on, in any process on the
        store: ``async with app.subscribe_results(100) as results: async for r in results``.

        Up to ``buffer`` results wait to be read; when full, ``drop`` picks which is lost
        (``Drop.NEWEST``: the new one; ``Drop.OLDEST``: the oldest buffered), counted in
        ``dropped``. ``job_ids``, ``names`` and ``queues`` keep only matching jobs.
        Listening starts at ``async with`` (or the first ``async for`` step) and stops at
        ``close()``; the store's listener stops with the last subscription.
        """
        return ResultSubscription(self, buffer, drop, job_ids=job_ids, names=names,
                                  queues=queues)

    async def prune(self) -> int:
        """Apply the retention policy now; returns how many finished jobs were deleted."""
        backend = await self.backend()
        policy = self.retention_policy
        before = None if policy.ttl is None else await backend.now() - policy.ttl
        return await backend.prune(finished_before=before, keep=policy.max_entries)

    def __repr__(self) -> str:
        return f"App({self.url!r}, handlers={self.registry.names()})"


def _as_request(job: EnqueueRequest | Job[Any] | Mapping[str, Any]) -> EnqueueRequest:
    if isinstance(job, EnqueueRequest):
        return job
    if isinstance(job, Job):
        # A Job's own defaults (queue "default", priority 0) defer to the handler's options.
        return EnqueueRequest(job.name, job.args,
                              queue=None if job.queue == DEFAULT_QUEUE else job.queue,
                              at=job.run_at, priority=job.priority or None, timeout=job.timeout,
                              headers=job.headers, job_id=job.id)
    return EnqueueRequest(**job)
