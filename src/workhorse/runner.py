"""Run one job through its handler's full chain and record how the run ended."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from workhorse import middleware
from workhorse.chain import compose, endpoint, record_failure
from workhorse.errors import UnknownHandlerError
from workhorse.job import Job
from workhorse.registry import Registration
from workhorse.status import Status
from workhorse.types import Handler

if TYPE_CHECKING:
    from workhorse.app import App


class Runner:
    """Builds each handler's chain once and runs jobs through it.

    Owns the thread pool that sync handlers run in; ``close()`` shuts it down.
    """

    def __init__(self, app: App, *, threads: int = 8, thread_name: str = "workhorse") -> None:
        self.app = app
        self._threads = threads
        self._thread_name = thread_name
        self._executor: ThreadPoolExecutor | None = None
        #: Per handler name: its registration and its composed chain.
        self._chains: dict[str, tuple[Registration, Handler]] = {}
        self._generation = app.generation

    def chain(self, name: str) -> tuple[Registration, Handler]:
        """Handler ``name``'s registration and chain (app adapters, its adapters, timeout);
        raises UnknownHandlerError."""
        if self._generation != self.app.generation:
            self._chains.clear()
            self._generation = self.app.generation
        found = self._chains.get(name)
        if found is None:
            registration = self.app.registry.get(name)
            adapters = [*self.app.adapters, *registration.options.adapters, middleware.timeout()]
            if self.app.tracing is not None:
                adapters.insert(0, self.app.tracing.adapter)
            found = registration, compose(adapters, endpoint(
                registration.fn, executor=self._pool(), args_type=registration.args_type
            ))
            self._chains[name] = found
        return found

    async def run(self, job: Job[Any]) -> Job[Any]:
        """Run ``job`` once; its status, result or error are set on it when this returns.

        The caller sets ``job.attempt`` (the durable store counts attempts itself).

        Never raises for a handler failure. Cancellation of the caller cancels the handler,
        marks the job CANCELLED and propagates.
        """
        job.started_at = time.time()
        try:
            registration, chain = self.chain(job.name)
            if job.timeout is None:
                job.timeout = registration.options.timeout
            await chain(job)
        except UnknownHandlerError as exc:
            job.ctx.status = Status.BAD_REQUEST
            job.error = str(exc)
        except asyncio.CancelledError:
            job.ctx.status = Status.CANCELLED
            job.error = "cancelled"
            raise
        except Exception as exc:
            record_failure(job, exc)
        finally:
            job.finished_at = time.time()
            job.status = job.ctx.status
        return job

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix=self._thread_name)
        return self._executor

    async def close(self, timeout: float | None = None) -> bool:
        """Shut the thread pool down; False if a sync handler was still busy after ``timeout``."""
        executor, self._executor = self._executor, None
        self._chains.clear()
        if executor is None:
            return True
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def shutdown() -> None:
            executor.shutdown(wait=True, cancel_futures=True)
            loop.call_soon_threadsafe(done.set)

        # Shut down from a short-lived thread of our own: waiting on the loop would block it,
        # and asyncio.to_thread would leave a default-executor thread behind.
        closer = threading.Thread(target=shutdown, name=f"{self._thread_name}-shutdown")
        closer.start()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            return False
        closer.join()  # it has finished its work; this only waits for the thread to exit
        return True
