"""The postgres result feed: finished jobs told by a trigger with NOTIFY on a channel of their
own (migrations/0004_result_streams.sql).

The trigger tells only while the row of ``result_listening`` is in the future; each open
feed pushes it ``LISTEN_TTL`` seconds ahead and renews it every third of that. So while no
feed listens a finish costs the trigger's look at that one row; while one does, a small
JSON object and a NOTIFY in the finishing transaction (which already NOTIFYs the work
channel, so it takes no lock it did not take before). The message holds the result when
the whole stays under PostgreSQL's 8000-byte payload limit; otherwise it says ``more`` and
the feed reads the job. Each feed holds one LISTEN connection of its own, closed with it.
What finishes while that connection is lost is missed; the feed connects again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from workhorse.backends.base import FinishedJob, JobRecord, State
from workhorse.backends.feeds import QueuedFeed
from workhorse.backends.postgres.connections import listening_connection

log = logging.getLogger("workhorse.backends.postgres")

#: Seconds the trigger keeps telling results unless an open feed renews ``result_listening``.
LISTEN_TTL = 30.0
_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 2.0


class PostgresResultFeed(QueuedFeed):
    """One LISTEN connection on the results channel, feeding a FeedQueue."""

    def __init__(self, conninfo: str, channel_query: str,
                 renew: Callable[[float], Awaitable[None]],
                 get: Callable[[str], Awaitable[JobRecord | None]]) -> None:
        super().__init__()
        self._conninfo = conninfo
        self._channel_query = channel_query
        self._renew = renew
        self._get = get
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """LISTEN and switch the trigger on; returns once results are told to this feed."""
        self._conn = await self._listen()
        await self._renew(LISTEN_TTL)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(), name="workhorse-postgres:result-feed"),
                       loop.create_task(self._keep_on(), name="workhorse-postgres:result-renew")]

    @property
    def active(self) -> bool:
        return self._queue.active and any(not task.done() for task in self._tasks)

    @property
    def connection(self) -> psycopg.AsyncConnection[Any] | None:
        """The LISTEN connection, while there is one."""
        return self._conn

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        return await listening_connection(self._conninfo, self._channel_query)

    async def _keep_on(self) -> None:
        while True:
            await asyncio.sleep(LISTEN_TTL / 3)
            try:
                await self._renew(LISTEN_TTL)
            except Exception as exc:  # the reader notices a lost store too; try again soon
                log.warning("result feed could not renew result_listening: %s", exc)

    async def _read(self) -> None:
        pause = _FIRST_PAUSE
        while True:
            try:
                if self._conn is None:
                    self._conn = await self._listen()
                    pause = _FIRST_PAUSE
                async for note in self._conn.notifies():
                    finished = await self._finished(note.payload)
                    if finished is not None:
                        self._queue.push([finished])
            except psycopg.Error as exc:
                log.warning("result feed lost its PostgreSQL connection (%s); results "
                            "finishing meanwhile are missed", exc)
                conn, self._conn = self._conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    async def _finished(self, payload: str) -> FinishedJob | None:
        try:
            fields: dict[str, Any] = json.loads(payload)
            result = fields.get("result")
            job = FinishedJob(
                id=str(fields["id"]), name=str(fields["name"]), queue=str(fields["queue"]),
                state=State(fields["state"]), status=fields.get("status"),
                result=result.encode() if isinstance(result, str) else None,
                error=fields.get("error"), attempt=int(fields.get("attempt") or 0),
                finished_at=fields.get("finished_at"))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("result feed skipped a message it cannot read: %s", exc)
            return None
        if fields.get("more"):
            try:
                record = await self._get(job.id)
            except Exception as exc:  # the store is away: tell the outcome without it
                log.warning("result feed could not read job %s: %s", job.id, exc)
                record = None
            if record is not None:
                job = dataclasses.replace(job, result=record.result, error=record.error)
        return job


async def open_feed(conninfo: str, channel_query: str,
                    renew: Callable[[float], Awaitable[None]],
                    get: Callable[[str], Awaitable[JobRecord | None]]) -> PostgresResultFeed:
    """A started PostgresResultFeed."""
    feed = PostgresResultFeed(conninfo, channel_query, renew, get)
    try:
        await feed.start()
    except BaseException:
        await feed.close()
        raise
    return feed
