"""The redis result feed: finished jobs published by the scripts on the ``results`` channel.

``finish()`` in common.lua publishes a job's outcome as JSON, but only while the key
``results:listening`` exists; each open feed sets it with a ``LISTEN_TTL`` expiry and
renews it every third of that. So while nobody listens anywhere, a finish costs one EXISTS
inside its script; while someone does, an HMGET, a small JSON encode and one PUBLISH
(delivered once per subscribed connection, one per subscribing process and loop). After
the last feed closes the key lapses within ``LISTEN_TTL`` seconds (it cannot be deleted:
other processes may still listen), publishing to nobody meanwhile.

A result larger than ``RESULT_INLINE`` bytes (in common.lua) is not published: the message
says ``more`` and the feed reads the job. What finishes while the feed's connection is lost
is missed; the feed subscribes again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from workhorse.backends.base import FinishedJob, JobRecord, State
from workhorse.backends.feeds import QueuedFeed
from workhorse.tasks import cancellable

log = logging.getLogger("workhorse.backends.redis")

#: Seconds the ``results:listening`` key lives unless an open feed renews it.
LISTEN_TTL = 30.0
_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 2.0


class RedisResultFeed(QueuedFeed):
    """One pub/sub connection on the results channel, feeding a FeedQueue."""

    def __init__(self, client: Redis, prefix: str,
                 get: Callable[[str], Awaitable[JobRecord | None]]) -> None:
        super().__init__()
        self._client = client
        self.channel = prefix + "results"
        self._listening_key = prefix + "results:listening"
        self._get = get
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe, and return once the scripts publish to this feed."""
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name="workhorse-redis:result-feed")
        waiting = asyncio.ensure_future(self._subscribed.wait())
        try:
            await asyncio.wait({waiting, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not self._subscribed.is_set():
            await self._task  # raises what stopped the listener

    @property
    def active(self) -> bool:
        return self._queue.active and self._task is not None and not self._task.done()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _announce(self) -> None:
        await cancellable(self._client.set(self._listening_key, b"1",
                                           px=round(LISTEN_TTL * 1000)))

    async def _listen(self) -> None:
        pause = _FIRST_PAUSE
        first = True
        while True:
            pubsub = self._client.pubsub()
            try:
                await self._announce()
                await cancellable(pubsub.subscribe(self.channel))
                loop = asyncio.get_running_loop()
                renew_at = loop.time() + LISTEN_TTL / 3
                while True:
                    timeout = max(0.0, renew_at - loop.time())
                    message = await cancellable(pubsub.get_message(timeout=timeout))
                    if loop.time() >= renew_at:
                        await self._announce()
                        # Also notices a subscription whose connection died quietly.
                        await cancellable(pubsub.ping())
                        renew_at = loop.time() + LISTEN_TTL / 3
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                        pause = _FIRST_PAUSE
                    elif message["type"] == "message":
                        finished = await self._finished(message["data"])
                        if finished is not None:
                            self._queue.push([finished])
            except (RedisError, OSError) as exc:
                if first and not self._subscribed.is_set():
                    raise  # start() reports it: the store cannot be reached now
                log.warning("result feed lost its Redis connection (%s); results finishing "
                            "meanwhile are missed", exc)
            finally:
                first = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    async def _finished(self, data: bytes) -> FinishedJob | None:
        try:
            fields: dict[str, Any] = json.loads(data)
            job = FinishedJob(
                id=str(fields["id"]), name=str(fields["name"]), queue=str(fields["queue"]),
                state=State(fields["state"]), status=_int(fields.get("status")),
                result=_bytes(fields.get("result")), error=fields.get("error"),
                attempt=_int(fields.get("attempt")) or 0,
                finished_at=float(fields["finished_at"]))
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
                job = dataclasses.replace(job, result=record.result)
        return job


def _int(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        return int(float(value))
    return None


def _bytes(value: object) -> bytes | None:
    return value.encode() if isinstance(value, str) else None


async def open_feed(client: Redis, prefix: str,
                    get: Callable[[str], Awaitable[JobRecord | None]]) -> RedisResultFeed:
    """A started RedisResultFeed."""
    feed = RedisResultFeed(client, prefix, get)
    try:
        await feed.start()
    except BaseException:  # cancelled or failed: leave no subscription behind
        await feed.close()
        raise
    return feed
