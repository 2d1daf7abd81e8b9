"""The sqlite result feed: finished jobs found by polling the file after a cursor.

SQLite cannot notify another process, so the feed looks every ``POLL`` seconds, and only
when something may have changed: ``PRAGMA data_version`` moved (another connection
committed) or this instance finished a job, or at least every ``FULL_LOOK`` seconds. A look
is one read of the partial index on ``finished_at``. A job is told within about ``POLL``
seconds of its commit, and the store pays nothing per job: the cost is the subscriber's.

The cursor is the latest ``finished_at`` seen (at most this process's clock), less
``LOOKBACK``: every move takes its time once it holds the write lock, so commits come in
time order, but a process whose clock runs behind writes earlier times; one more than
``LOOKBACK`` behind has its finishes missed. Jobs within the lookback are told once,
remembered by (row, finished_at), which also tells a job again when it finishes again
after an admin's retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Hashable

from workhorse.backends.base import FinishedJob, ResultFeed, State
from workhorse.backends.feeds import QueuedFeed
from workhorse.backends.sqlite.queries import FINISHED, marks
from workhorse.errors import StoreError

#: Runs a function in a read transaction on the backend's database thread.
Read = Callable[[Callable[[sqlite3.Connection], list[FinishedJob]]],
                Awaitable[list[FinishedJob]]]

log = logging.getLogger("workhorse.backends.sqlite")

#: Seconds between two looks at the file while something changed.
POLL = 0.05
#: Seconds between two looks however quiet the file seems.
FULL_LOOK = 1.0
#: How far before the latest finish seen each look starts, seconds.
LOOKBACK = 1.0


class SqliteResultFeed(QueuedFeed):
    """A FeedQueue filled by one polling task; see the module docstring."""

    def __init__(self, read: Read, marker: Callable[[], Awaitable[Hashable]],
                 closed_error: type[Exception]) -> None:
        super().__init__()
        self._read = read
        self._marker = marker
        self._closed_error = closed_error
        #: (seq, finished_at) of the jobs told within the lookback.
        self._seen: dict[tuple[int, float], float] = {}
        self._since = time.time() - LOOKBACK
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the cursor (jobs finished before now are not told) and start polling."""
        await self._read(lambda conn: self._take(conn, tell=False))
        self._task = asyncio.get_running_loop().create_task(
            self._poll(), name="workhorse-sqlite:result-feed")

    @property
    def active(self) -> bool:
        return self._queue.active and self._task is not None and not self._task.done()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        seen: Hashable = None
        looked = loop.time()
        while True:
            await asyncio.sleep(POLL)
            try:
                marker = await self._marker()
                if marker != seen or loop.time() - looked >= FULL_LOOK:
                    seen, looked = marker, loop.time()
                    self._queue.push(await self._read(lambda conn: self._take(conn, tell=True)))
            except self._closed_error:
                self._task = None  # the store was closed: the feed ends
                await self._queue.close()
                return
            except StoreError as exc:  # locked for long, or the disk went away: keep going
                log.warning("the result feed could not read the SQLite file: %s", exc)
                await asyncio.sleep(FULL_LOOK)

    def _take(self, conn: sqlite3.Connection, *, tell: bool) -> list[FinishedJob]:
        """The jobs finished since the cursor and not told yet; moves the cursor."""
        # The partial index workhorse_jobs_finished covers (finished_at, seq).
        rows = conn.execute(
            f"SELECT seq, finished_at FROM workhorse_jobs WHERE state IN {FINISHED} "
            "AND finished_at >= ? ORDER BY finished_at, seq", (self._since,)).fetchall()
        fresh = [(seq, at) for seq, at in rows if (seq, at) not in self._seen]
        for key in fresh:
            self._seen[key] = key[1]
        if rows:
            # Never past this process's own clock: a process whose clock runs ahead must
            # not carry the cursor past what the others are about to write.
            self._since = max(self._since, min(rows[-1][1], time.time()) - LOOKBACK)
            self._seen = {k: at for k, at in self._seen.items() if at >= self._since}
        if not tell or not fresh:
            return []
        told: list[FinishedJob] = []
        for start in range(0, len(fresh), 500):
            chunk = [seq for seq, _ in fresh[start:start + 500]]
            told.extend(
                FinishedJob(id=row[0], name=row[1], queue=row[2], state=State(row[3]),
                            status=row[4], result=row[5], error=row[6], attempt=row[7],
                            finished_at=row[8])
                for row in conn.execute(
                    "SELECT id, name, queue, state, status, result, error, attempt, "
                    f"finished_at FROM workhorse_jobs WHERE seq IN ({marks(chunk)}) "
                    "ORDER BY finished_at, seq", chunk))
        return told


async def open_feed(read: Read, marker: Callable[[], Awaitable[Hashable]],
                    closed_error: type[Exception]) -> ResultFeed:
    """A started SqliteResultFeed."""
    feed = SqliteResultFeed(read, marker, closed_error)
    await feed.start()
    return feed
