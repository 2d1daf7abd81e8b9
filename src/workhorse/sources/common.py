"""Bookkeeping shared by the sources: lazy client imports, the settle-once guard, prefetch
slots and settle counts (NATS, RabbitMQ), in-flight tracking with lease renewal and retrying
while the server is unreachable (Redis Streams, PostgreSQL table)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from workhorse.backoff import BackoffFn
from workhorse.sources.base import SourceClosed

T = TypeVar("T")
MessageT = TypeVar("MessageT", bound="Identified")
S = TypeVar("S", bound="SlotSource")


def require(*modules: str, hint: str) -> Any:
    """Import ``modules`` (a package and the submodules a source uses) and return the first;
    an ImportError saying ``hint`` (what to install) when the optional dependency is missing."""
    try:
        imported = [importlib.import_module(module) for module in modules]
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(hint) from exc
    return imported[0]


class SettleOnce:
    """The guard every message keeps: the runtime settles a message once, so a second call
    is a bug, not a retry."""

    _settled: bool = False

    def _settle_once(self, message_id: str) -> None:
        if self._settled:
            raise RuntimeError(f"message {message_id} was already settled")
        self._settled = True


# -- prefetch slots (NATS JetStream, RabbitMQ) -------------------------------------------------


class SlotSource:
    """Base of the sources that hold a slot per unsettled delivery (at most ``prefetch``) and
    count what they received and each kind of settle call."""

    def __init__(self) -> None:
        self._slots: asyncio.Semaphore | None = None
        #: Progress: deliveries received and settle calls made, by kind.
        self.received = 0
        self.settled: dict[str, int] = {"ack": 0, "nack": 0, "dead_letter": 0}

    def release(self) -> None:
        """Free one prefetch slot (called when a message is settled)."""
        if self._slots is not None:
            self._slots.release()

    def _open_slots(self, prefetch: int) -> asyncio.Semaphore:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._slots = asyncio.Semaphore(prefetch)
        return self._slots


class SlotMessage(SettleOnce, Generic[S]):
    """Base of a delivery that holds a slot of its source ``S``; a subclass names who
    redelivers a message whose settle call failed."""

    #: Who sends the message again when a settle call fails, for the SourceClosed message.
    redeliverer = "the server"

    def __init__(self, source: S, message_id: str, body: Any, headers: Mapping[str, str],
                 deliveries: int) -> None:
        self._source = source
        self._id = message_id
        self._body = body
        self._headers = headers
        self._deliveries = deliveries

    @property
    def id(self) -> str:
        return self._id

    @property
    def body(self) -> Any:
        return self._body

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def deliveries(self) -> int:
        return self._deliveries

    def _settling(self, verb: str) -> Settling:
        self._settle_once(self._id)
        return Settling(self._source, f"{verb} of {self._id}", verb, self.redeliverer)


class Settling:
    """One settle call: frees the message's slot however it ends, counts it when it worked,
    and turns a failure (a lost connection or channel) into SourceClosed."""

    def __init__(self, source: SlotSource, what: str, verb: str, redeliverer: str) -> None:
        self._source, self._what, self._verb = source, what, verb
        self._redeliverer = redeliverer

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        _tb: object) -> bool:
        self._source.release()
        if exc is None:
            self._source.settled[self._verb] += 1
            return False
        if isinstance(exc, Exception):
            raise SourceClosed(f"{self._what} failed: {exc!r}; "
                               f"{self._redeliverer} will redeliver it") from exc
        return False


class Closing(Exception):
    """The source was closed while it waited."""


async def unless_closed(closed: asyncio.Event, awaitable: Awaitable[T]) -> T:
    """The result of ``awaitable``, unless ``closed`` is set first: then it is cancelled and
    Closing is raised."""
    waiting = asyncio.ensure_future(awaitable)
    closing = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({waiting, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
        if not waiting.done():
            waiting.cancel()
    if not waiting.done() or waiting.cancelled():
        raise Closing
    return waiting.result()


# -- in-flight messages under a lease (Redis Streams, PostgreSQL table) ------------------------


class Identified(Protocol):
    """A message as ``InFlight`` tracks it: by its id."""

    @property
    def id(self) -> str: ...


class InFlight(Generic[MessageT]):
    """The messages a source handed out and not yet settled, under a lease that a task
    renews every ``renew_every`` seconds by ``renew(messages)``, so a slow handler keeps its
    messages and only a dead consumer's come back."""

    def __init__(self, source: str, renew: Callable[[list[MessageT]], Awaitable[None]],
                 renew_every: float, log: logging.Logger) -> None:
        self.messages: dict[str, MessageT] = {}
        #: Set each time a message settles (there is room for another) or ``wake()`` is
        #: called (there may be new ones): a waiting ``deliver`` fetches again.
        self.room = asyncio.Event()
        self._source, self._renew, self._renew_every, self._log = source, renew, renew_every, log
        self._renewer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.messages)

    def settled(self, message_id: str) -> None:
        self.messages.pop(message_id, None)
        self.room.set()

    def wake(self) -> None:
        """New messages may be waiting (a notification said so): fetch now rather than at
        the end of the poll interval."""
        self.room.set()

    async def deliver(self, prefetch: int, fetch: Callable[[int], Awaitable[list[MessageT]]], *,
                      closed: Callable[[], bool], give_back: Callable[[MessageT], Awaitable[None]],
                      poll_interval: float | None) -> AsyncGenerator[MessageT, None]:
        """Fetch as many as there is room for (``prefetch`` less those in flight) and yield
        each, tracked until it settles. After a short batch, wait ``poll_interval`` seconds
        or until a message settles; None: ``fetch`` itself waits for new messages, and a
        full source waits for a settle. Messages fetched but not handed out when the reader
        stops are given back."""
        if self._renewer is None:
            # It outlives this iterator: runs still in flight when the consumer stops reading
            # keep their messages until they settle, up to close().
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_loop(), name=f"{self._source}:renew")
        fetched: list[MessageT] = []
        try:
            while not closed():
                self.room.clear()
                room = prefetch - len(self.messages)
                if room > 0:
                    fetched = await fetch(room)
                    full = len(fetched) == room
                    while fetched:
                        message = fetched.pop(0)
                        self.messages[message.id] = message
                        yield message
                    # A full batch may have more behind it; without polling, fetch waits.
                    if full or poll_interval is None:
                        continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.room.wait(), poll_interval)
        finally:
            for message in fetched:
                with contextlib.suppress(Exception):
                    await give_back(message)

    async def close(self) -> None:
        """Wake a waiting ``deliver`` and stop renewing."""
        self.room.set()
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.wait({self._renewer})

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._renew_every)
            messages = list(self.messages.values())
            if not messages:
                continue
            try:
                await self._renew(messages)
            except Exception as exc:
                self._log.warning("%s: could not renew the leases of %d in-flight messages: %s",
                                  self._source, len(messages), exc)


async def retrying(log: logging.Logger, source: str, what: str,
                   call: Callable[[], Awaitable[T]], *, errors: tuple[type[BaseException], ...],
                   backoff: BackoffFn, closed: Callable[[], bool],
                   on_error: Callable[[], Awaitable[None]]) -> T:
    """``call()``, again with backoff (after ``on_error()``) while it raises one of
    ``errors`` (the server is unreachable); SourceClosed once ``closed()``."""
    attempt = 0
    while True:
        if closed():
            raise SourceClosed(f"{source} is closed")
        try:
            return await call()
        except errors as exc:
            attempt += 1
            pause = backoff(attempt)
            log.warning("%s: %s failed (%s); reconnecting in %.2fs (attempt %d)",
                        source, what, str(exc).strip(), pause, attempt)
            await on_error()
            await asyncio.sleep(pause)
