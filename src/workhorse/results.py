"""Result streams: every finished job told to each subscriber, from any process on the store.

``App.subscribe_results(buffer, drop=...)`` returns a ResultSubscription, an async iterator
of Result. All subscriptions of an app on one event loop share one ResultHub, which holds
the backend's result feed (one listener: a pub/sub subscription, a LISTEN connection or a
poll) while at least one subscription is open and closes it with the last one. The hub
copies each result into every subscription's bounded buffer; a full buffer drops by its
policy and counts what it dropped, so one slow subscriber never holds up the others or
the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from workhorse import codec
from workhorse.backends.base import FinishedJob, ResultFeed, State
from workhorse.errors import WorkhorseError
from workhorse.status import Status

if TYPE_CHECKING:
    from workhorse.app import App

log = logging.getLogger("workhorse.results")

#: A subscription logs its drops at most this often, seconds.
_DROP_LOG_EVERY = 1.0

#: Told of each result a full buffer drops (the lost one); see ``on_drop``.
DropListener = Callable[["Result"], None]

# Per app, not on App: only telemetry listens, and an app nobody measures pays nothing.
_drop_listeners: weakref.WeakKeyDictionary[App, list[DropListener]] = (
    weakref.WeakKeyDictionary())


class Drop(enum.Enum):
    """What a subscription whose buffer is full does with a new result."""

    #: Keep the buffer; the new result is dropped (go-worker's default).
    NEWEST = "newest"
    #: Drop the oldest buffered result to make room for the new one.
    OLDEST = "oldest"


@dataclasses.dataclass(frozen=True)
class Result:
    """A finished job, as a result stream tells it."""

    job_id: str
    name: str
    queue: str
    #: SUCCEEDED, DEAD or CANCELLED.
    state: State
    #: The status of its last attempt (a Status member where the code is one).
    status: int | None
    #: The handler's return value, decoded; None unless it returned one.
    result: Any
    error: str | None
    #: Attempts made, the last included.
    attempt: int
    #: Epoch seconds, from the store's clock where it has one.
    finished_at: float | None

    @property
    def ok(self) -> bool:
        """True if the job succeeded."""
        return self.state is State.SUCCEEDED

    @classmethod
    def from_finished(cls, job: FinishedJob) -> Result:
        """The Result of a feed's FinishedJob, its result decoded."""
        value: Any = None
        if job.result is not None:
            try:
                value = codec.decode(job.result)
            except msgspec.DecodeError:  # written by hand or by a foreign producer
                value = None
        status: int | None = job.status
        if status is not None:
            with contextlib.suppress(ValueError):  # a code workhorse does not name
                status = Status(status)
        return cls(job_id=job.id, name=job.name, queue=job.queue, state=job.state,
                   status=status, result=value, error=job.error, attempt=job.attempt,
                   finished_at=job.finished_at)


class ResultSubscription:
    """An async iterator of finished jobs' results, with a bounded buffer.

    Listening starts at ``async with`` (or at the first ``async for`` step) and stops at
    ``close()``. ``dropped`` counts the results lost to a full buffer. Filters keep only
    the jobs with one of ``job_ids``, ``names`` or ``queues`` (each None: any).
    """

    def __init__(self, app: App, buffer: int, drop: Drop, *,
                 job_ids: Iterable[str] | None = None, names: Iterable[str] | None = None,
                 queues: Iterable[str] | None = None) -> None:
        if buffer < 1:
            raise ValueError("a result buffer holds at least 1 result")
        self.buffer = buffer
        self.drop = Drop(drop)
        #: Results dropped because the buffer was full.
        self.dropped = 0
        self._app = app
        self._job_ids = _set_or_none(job_ids)
        self._names = _set_or_none(names)
        self._queues = _set_or_none(queues)
        self._items: deque[Result] = deque()
        self._ready = asyncio.Event()
        self._hub: ResultHub | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._logged_at = float("-inf")
        self._dropped_logged = 0
        #: The position in the hub's feed from which results are for this subscription.
        self.since = 0

    @property
    def closed(self) -> bool:
        """True once closed (by ``close`` or because its feed failed)."""
        return self._closed

    async def start(self) -> None:
        """Start listening; returns once every job finishing from now on will be told.
        Idempotent; ``async with`` and the first ``async for`` step call it."""
        if self._hub is not None or self._closed:
            return
        self._hub = _hub_for(self._app)
        await self._hub.add(self)

    async def close(self) -> None:
        """Stop listening and free the buffer; the store's listener stops with the last
        subscription. Iteration then ends. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._items.clear()
        self._ready.set()
        hub, self._hub = self._hub, None
        if hub is not None:
            await hub.remove(self)

    def wants(self, result: Result) -> bool:
        return ((self._job_ids is None or result.job_id in self._job_ids)
                and (self._names is None or result.name in self._names)
                and (self._queues is None or result.queue in self._queues))

    def offer(self, result: Result) -> None:
        """Buffer ``result``, dropping by the policy when full (called by the hub)."""
        if self._closed or not self.wants(result):
            return
        if len(self._items) >= self.buffer:
            self.dropped += 1
            self._log_drops()
            lost = result if self.drop is Drop.NEWEST else self._items.popleft()
            _tell_drop(self._app, lost)
            if self.drop is Drop.NEWEST:
                return
        self._items.append(result)
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        """End the subscription with ``error``, raised by the next step (called by the hub)."""
        self._error = error
        self._closed = True
        self._hub = None
        self._ready.set()

    def _log_drops(self) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _DROP_LOG_EVERY:
            log.warning("result subscription's buffer (%d) is full: dropped %d %s result(s) "
                        "since the last report, %d in all", self.buffer,
                        self.dropped - self._dropped_logged, self.drop.value, self.dropped)
            self._logged_at = now
            self._dropped_logged = self.dropped

    def __aiter__(self) -> ResultSubscription:
        return self

    async def __anext__(self) -> Result:
        await self.start()
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    async def __aenter__(self) -> ResultSubscription:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<ResultSubscription {state} buffer={self.buffer} drop={self.drop.value} "
                f"buffered={len(self._items)} dropped={self.dropped}>")


class ResultHub:
    """One app's result feed on one event loop, fanned out to its subscriptions."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.subscriptions: list[ResultSubscription] = []
        #: The backend's feed while some subscription is open (None before and after).
        self.feed: ResultFeed | None = None
        self._opening: asyncio.Task[ResultFeed] | None = None
        self._task: asyncio.Task[None] | None = None
        #: How many results the fan-out has taken from the feed.
        self._taken = 0

    async def add(self, subscription: ResultSubscription) -> None:
        # Told to the feed but not fanned out yet: finished before this subscription.
        subscription.since = 0 if self.feed is None else self.feed.told
        self.subscriptions.append(subscription)
        try:
            if self.feed is None:
                if self._opening is None:
                    self._opening = asyncio.get_running_loop().create_task(
                        self._open(), name="workhorse:result-feed-open")
                # Shielded: a subscriber cancelled while the feed opens must not cancel
                # the opening that other subscribers await too.
                await asyncio.shield(self._opening)
        except BaseException:
            await self.remove(subscription)
            raise

    async def _open(self) -> ResultFeed:
        feed = await (await self._app.backend()).open_result_feed()
        self.feed = feed
        self._task = asyncio.get_running_loop().create_task(
            self._fan_out(feed), name="workhorse:result-fan-out")
        return feed

    async def remove(self, subscription: ResultSubscription) -> None:
        with contextlib.suppress(ValueError):
            self.subscriptions.remove(subscription)
        if not self.subscriptions:
            await self._shut()

    async def _shut(self) -> None:
        _forget_hub(self._app, self)
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        feed, self.feed = self.feed, None
        if feed is not None:
            await feed.close()

    async def _fan_out(self, feed: ResultFeed) -> None:
        try:
            while True:
                batch = await feed.next()
                if not batch:  # closed under us (the store was closed)
                    raise WorkhorseError("the result feed closed: the store was closed")
                for finished in batch:
                    result = Result.from_finished(finished)
                    for subscription in list(self.subscriptions):
                        if subscription.since <= self._taken:
                            subscription.offer(result)
                    self._taken += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every subscriber learns it, rather than waiting forever
            log.warning("result feed failed: %s", exc)
            for subscription in self.subscriptions:
                subscription.fail(exc)
            self.subscriptions.clear()
            await self._shut()


def on_drop(app: App, listener: DropListener) -> None:
    """Call ``listener(result)`` with each result that a full buffer of one of ``app``'s
    subscriptions drops (metrics count drops this way). It runs inline on the subscription's
    loop: keep it quick; one that raises is logged."""
    _drop_listeners.setdefault(app, []).append(listener)


def _tell_drop(app: App, lost: Result) -> None:
    for listener in _drop_listeners.get(app, ()):
        try:
            listener(lost)
        except Exception:
            log.exception("result drop listener %r failed", listener)


def _set_or_none(values: Iterable[str] | None) -> Collection[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return frozenset({values})
    return frozenset(values)


def _hub_for(app: App) -> ResultHub:
    """The hub of ``app`` on the running loop, made on first use."""
    loop = asyncio.get_running_loop()
    hubs: dict[asyncio.AbstractEventLoop, ResultHub] = app._result_hubs
    hub = hubs.get(loop)
    if hub is None:
        hub = hubs[loop] = ResultHub(app)
    return hub


def _forget_hub(app: App, hub: ResultHub) -> None:
    hubs = app._result_hubs
    for loop, known in list(hubs.items()):
        if known is hub:
            del hubs[loop]


async def close_subscriptions(app: App) -> None:
    """Close every subscription of ``app`` on the running loop (``App.close`` calls it)."""
    hub = app._result_hubs.get(asyncio.get_running_loop())
    if hub is not None:
        for subscription in list(hub.subscriptions):
            await subscription.close()
