"""The store's queue counts for the queue gauges, read when a metrics output collects.

Collection is synchronous and happens on another thread (an OpenTelemetry periodic reader,
the Prometheus scrape handler), while the store's connections belong to the app's event
loop. So a read runs ``queue_stats()`` on that loop and waits for it a bounded time: the
gauges are exact at each collection, and a store that is away costs a scrape at most
``timeout`` seconds and yields no queue gauges rather than stale ones.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import TYPE_CHECKING

from workhorse.backends.base import QueueStats
from workhorse.loop_calls import call_in_loop

if TYPE_CHECKING:
    from workhorse.app import App

log = logging.getLogger("workhorse.telemetry")

#: Seconds a collection waits for the store's queue counts.
STATS_TIMEOUT = 2.0


class QueueSampler:
    """Reads ``app``'s queue stats on the loop its store lives on, from any thread."""

    def __init__(self, app: App, timeout: float = STATS_TIMEOUT) -> None:
        # Weak: the sampler lives in a per-app registry keyed weakly by the app.
        self._app = weakref.ref(app)
        self.timeout = timeout
        #: The loop the store's calls run on: bound explicitly, else the latest event's.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._bound = False
        self._last: list[QueueStats] = []
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the store on ``loop`` from now on (the worker's loop)."""
        self.loop = loop
        self._bound = True

    def saw_loop(self) -> None:
        """Called on a job event: follow its loop unless one was bound and still runs."""
        loop = self.loop
        if self._bound and loop is not None and not loop.is_closed():
            return
        self.loop = asyncio.get_running_loop()
        self._bound = False

    async def refresh(self) -> list[QueueStats]:
        """Read the queue stats now, on the running loop, and keep them for ``read``."""
        app = self._app()
        if app is None:
            return []
        stats = await (await app.backend()).queue_stats()
        with self._lock:
            self._last = stats
        return stats

    def read(self) -> list[QueueStats]:
        """The queue stats, read now; on the store's own loop (which must not block) the
        last ones read; none when the loop is gone or the store does not answer in time."""
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return []
        if _running_loop() is loop:
            with self._lock:
                return list(self._last)

        try:
            # A little longer than the read's own bound, for a busy loop to answer.
            return call_in_loop(loop, self.refresh, self.timeout, 1.0)
        except TimeoutError:
            log.debug("queue stats: the store did not answer within %gs", self.timeout)
        except Exception as exc:  # the loop closed meanwhile, or the store failed
            log.debug("queue stats unavailable: %s: %s", type(exc).__name__, exc)
        return []


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
