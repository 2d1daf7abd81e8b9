"""One Redis client per event loop, and the listener that learns when watched jobs finish.

redis-py's asyncio connections belong to the loop that opened them, while one backend may
serve several loops (a worker's, and ``App.enqueue_sync``'s ``asyncio.run`` in another
thread). So each loop gets a ``LoopClient`` of its own, made on first use, with a guard task
that closes the client when the loop shuts down (``asyncio.run`` cancels pending tasks before
it closes the loop) or when the backend is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from workhorse.backends.redis.direct import DirectConnections
from workhorse.backends.redis.scripts import Scripts
from workhorse.backends.redis.settings import RedisSettings
from workhorse.tasks import cancellable

T = TypeVar("T")
log = logging.getLogger("workhorse.backends.redis")

#: An idle subscription pings the server this often, to notice a connection that died.
_PING_EVERY = 30.0
#: First and longest pause before the listener subscribes again after losing its connection.
_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 2.0


class LoopClient:
    """The client, scripts and (once needed) finish listener of one event loop."""

    def __init__(self, settings: RedisSettings, on_closed: Callable[[LoopClient], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = Redis.from_pool(settings.new_pool())
        self.direct = DirectConnections(self.client.connection_pool)
        self.scripts = Scripts(self.direct)
        #: True once this client is closed: waits in progress end instead of reconnecting.
        self.closed = False
        self._channel = settings.prefix + "events"
        self._on_closed = on_closed
        self._listener: FinishListener | None = None
        self._guard = self.loop.create_task(self._guard_until_closed(),
                                            name="workhorse-redis:loop-client")

    def listener(self) -> FinishListener:
        """The finish listener of this loop, started on first use."""
        if self._listener is None:
            self._listener = FinishListener(self.client, self._channel)
        return self._listener

    async def _guard_until_closed(self) -> None:
        try:
            await self.loop.create_future()  # until cancelled
        except BaseException as exc:
            self.closed = True
            self._on_closed(self)
            if isinstance(exc, GeneratorExit):
                raise  # the loop was closed with this task pending: nothing can run now
            if self._listener is not None:
                await self._listener.stop()
            with contextlib.suppress(RedisError, OSError):
                await self.direct.close()
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()
            raise

    async def close(self) -> None:
        """Close the client; from this client's own loop, or from any thread (not awaited)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._guard.cancel()
            await asyncio.wait({self._guard})
        elif not self.loop.is_closed():
            # Another thread's loop: its own task closes the client.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._guard.cancel)


class FinishListener:
    """A subscription to the namespace's finish events, waking this loop's waiters.

    finish() in the scripts publishes a job's id if some caller registered interest with
    watch.lua; the listener wakes the local waiters of that id. It also wakes every waiter
    whenever its subscription is (re)established or lost, since a message may have been
    missed meanwhile: each waiter then reads the job again.
    """

    def __init__(self, client: Redis, channel: str) -> None:
        self._client = client
        self._channel = channel
        #: Set while the subscription is live: a waiter looks at the job only after that.
        self.ready = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name="workhorse-redis:finish-listener")

    def watch(self, job_id: str) -> asyncio.Event:
        """An event set when ``job_id`` may have finished; pass it to ``unwatch`` later."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        return event

    def unwatch(self, job_id: str, event: asyncio.Event) -> None:
        """Forget a waiter made by ``watch``."""
        waiting = self._waiters.get(job_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self._waiters[job_id]

    def _wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for event in waiting:
                event.set()

    async def _listen(self) -> None:
        pause = _FIRST_PAUSE
        while True:
            pubsub = self._client.pubsub()
            try:
                await cancellable(pubsub.subscribe(self._channel))
                while True:
                    message = await cancellable(pubsub.get_message(timeout=_PING_EVERY))
                    if message is None:
                        await cancellable(pubsub.ping())
                    elif message["type"] == "subscribe":
                        self.ready.set()
                        self._wake_all()
                        pause = _FIRST_PAUSE
                    elif message["type"] == "message":
                        self._wake(bytes(message["data"]).decode("utf-8", "replace"))
            except (RedisError, OSError) as exc:
                log.debug("finish listener lost its connection (%s); subscribing again", exc)
                self.ready.clear()
                self._wake_all()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    async def stop(self) -> None:
        """End the subscription; waiters are woken (and find the client closed)."""
        while not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)
        self.ready.clear()
        self._wake_all()
