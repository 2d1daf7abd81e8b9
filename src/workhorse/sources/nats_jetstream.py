"""A NATS JetStream source: a durable pull consumer (``pip install workhorse[sources]``).

Settling maps onto JetStream's acknowledgements:

- ``ack()`` is ``AckSync``: it returns once the server has recorded the ack, so a message
  acked here is never delivered again.
- ``nack(delay)`` is ``Nak`` with that delay; the server redelivers after it.
- ``dead_letter(reason)``: JetStream has no dead-letter queue of its own. With
  ``dead_subject`` set, the message is published there (headers ``Workhorse-Dead-Reason``,
  ``Workhorse-Dead-From``, ``Workhorse-Deliveries`` added; ``Nats-Msg-Id`` set so a repeat
  after a crash is dropped by the dead stream's duplicate window), then terminated with
  ``Term`` and True is returned. Without it, False: the runtime keeps a workhorse dead job.

An unsettled message whose consumer died comes back after ``ack_wait`` seconds. The consumer
is created with ``max_deliver=-1``: how many deliveries a message gets is the handler's retry
policy, decided by the runtime, not the server's.

When the reader stops, its subscription is dropped before the runtime nacks what it held, so
the pull request still waiting at the server cannot take those messages (they would wait out
``ack_wait``). nats-server 2.9 then reports the next delivery of such a message one lower
than it is: after a stop, a message may get one more attempt than the handler's retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from workhorse.backoff import exponential
from workhorse.sources.base import SourceClosed, decode_body
from workhorse.sources.common import Closing, SlotMessage, SlotSource, require, unless_closed

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

log = logging.getLogger("workhorse.sources.nats")

#: Headers added to a message published to the dead subject.
DEAD_REASON_HEADER = "Workhorse-Dead-Reason"
DEAD_FROM_HEADER = "Workhorse-Dead-From"
DELIVERIES_HEADER = "Workhorse-Deliveries"


def _import_nats() -> Any:
    return require("nats", hint="NatsJetStreamSource needs nats-py: install workhorse[sources]")


class NatsJetStreamMessage(SlotMessage["NatsJetStreamSource"]):
    """One JetStream delivery; settling it frees its slot in the source's prefetch."""

    #: An unsettled JetStream message comes back after ``ack_wait``.
    redeliverer = "the server"

    def __init__(self, source: NatsJetStreamSource, msg: Msg) -> None:
        meta = msg.metadata
        super().__init__(source, f"{meta.stream}:{meta.sequence.stream}",
                         decode_body(msg.data), dict(msg.headers or {}),
                         int(meta.num_delivered))
        self._msg = msg

    @property
    def subject(self) -> str:
        """The subject the message was published on."""
        return str(self._msg.subject)

    async def ack(self) -> None:
        """Ack and wait for the server to confirm it."""
        async with self._settling("ack"):
            await self._msg.ack_sync(timeout=self._source.request_timeout)

    async def nack(self, delay: float = 0.0) -> None:
        """Ask the server to redeliver the message after ``delay`` seconds."""
        async with self._settling("nack"):
            await self._msg.nak(delay=delay if delay > 0 else None)

    async def dead_letter(self, reason: str) -> bool:
        """Publish to the dead subject, then terminate; False without a dead subject."""
        subject = self._source.dead_subject
        if subject is None:
            return False
        async with self._settling("dead_letter"):
            headers = {**self._headers, DEAD_REASON_HEADER: reason[:1024],
                       DEAD_FROM_HEADER: self.subject, DELIVERIES_HEADER: str(self._deliveries),
                       "Nats-Msg-Id": f"dead:{self._id}"}
            await self._source.jetstream.publish(subject, self._msg.data, headers=headers,
                                                 timeout=self._source.request_timeout)
            await self._msg.term()
        return True


class NatsJetStreamSource(SlotSource):
    """Messages of a JetStream stream, read by a durable pull consumer.

    ``stream``: the stream's name; created with ``subjects=[subject]`` when missing and
    ``create`` is true. ``subject``: the consumer's filter subject. ``durable``: the consumer's
    name, shared by every process that should split the work. ``ack_wait``: seconds before an
    unsettled delivery is sent again. ``dead_subject``: where dead letters go (a stream named
    ``dead_stream``, default ``<stream>_dead``, is created for it when none captures it).
    While idle, the source checks every ``check_interval`` seconds that its consumer still
    exists, and makes it again (``create``) or waits for it when it was deleted.
    """

    def __init__(self, servers: str | list[str] = "nats://127.0.0.1:4222", *, stream: str,
                 subject: str, durable: str, ack_wait: float = 30.0,
                 dead_subject: str | None = None, dead_stream: str | None = None,
                 create: bool = True, fetch_timeout: float = 1.0,
                 request_timeout: float = 5.0, reconnect_cap: float = 5.0,
                 check_interval: float = 5.0) -> None:
        super().__init__()
        self.servers = servers
        self.stream = stream
        self.subject = subject
        self.durable = durable
        self.ack_wait = ack_wait
        self.dead_subject = dead_subject
        self.dead_stream = dead_stream or f"{stream}_dead"
        self.create = create
        self.fetch_timeout = fetch_timeout
        self.request_timeout = request_timeout
        self.check_interval = check_interval
        self._checked_at = 0.0
        self._backoff = exponential(base=0.1, cap=reconnect_cap)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._closed = asyncio.Event()

    @property
    def name(self) -> str:
        return f"nats-jetstream:{self.stream}/{self.durable}"

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context of the live connection; SourceClosed when there is none."""
        if self._js is None:
            raise SourceClosed(f"{self.name} is not connected")
        return self._js

    async def messages(self, prefetch: int) -> AsyncIterator[NatsJetStreamMessage]:
        """Deliveries in batches of up to the free slots, at most ``prefetch`` unsettled."""
        self._open_slots(prefetch)
        try:
            failures = 0
            while not self._closed.is_set():
                wanted = await self._take_slots(prefetch)
                batch: list[Msg] = []
                try:
                    sub = await self._subscription()
                    batch = await sub.fetch(wanted, timeout=self.fetch_timeout)
                    failures = 0
                except Closing:
                    self._give_back(wanted)
                    return
                except asyncio.CancelledError:
                    self._give_back(wanted)
                    raise
                except Exception as exc:
                    self._give_back(wanted)
                    if _is_fetch_timeout(exc):
                        if not await self._consumer_gone():
                            continue
                        exc = LookupError(f"consumer {self.durable} of {self.stream} is gone")
                    failures += 1
                    await self._recover(exc, failures)
                    continue
                self._give_back(wanted - len(batch))
                for index, msg in enumerate(batch):
                    try:
                        self.received += 1
                        yield NatsJetStreamMessage(self, msg)
                    except BaseException:
                        # The consumer stopped reading: hand the rest back at once rather than
                        # leave them to ``ack_wait``.
                        await self._nak_quietly(batch[index + 1:])
                        raise
        finally:
            # A stopping consumer nacks what it holds right after this: drop the pull
            # request still waiting at the server first, or it would take those messages
            # for a reader that is gone, and they would wait out ``ack_wait``.
            await self._unsubscribe()

    async def close(self) -> None:
        """Stop fetching, flush what is pending (naks, terms) and close the connection."""
        self._closed.set()
        await self._unsubscribe()
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        try:
            await nc.flush(timeout=max(1, round(self.request_timeout)))
        except Exception as exc:
            log.warning("%s: flush before closing failed (%r)", self.name, exc)
        await nc.close()

    async def _take_slots(self, prefetch: int) -> int:
        """Wait for one free slot, then take every other free one (the batch size)."""
        assert self._slots is not None
        await self._slots.acquire()
        taken = 1
        while taken < prefetch and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def _give_back(self, count: int) -> None:
        for _ in range(count):
            self.release()

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is not None:
            return self._sub
        if self._nc is None or self._nc.is_closed:
            await self._connect()
        js = self.jetstream
        if self.create:
            await self._ensure_streams(js)
            nats = _import_nats()
            config = nats.js.api.ConsumerConfig(
                durable_name=self.durable, ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait, max_deliver=-1, filter_subject=self.subject)
            self._sub = await js.pull_subscribe(self.subject, durable=self.durable,
                                                stream=self.stream, config=config)
        else:
            self._sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        log.info("%s: consuming %s", self.name, self.subject)
        return self._sub

    async def _connect(self) -> None:
        """Connect (nats-py retries until the server answers), unless closed meanwhile."""
        nats = _import_nats()
        errors_in_a_row = 0

        async def on_error(exc: Exception) -> None:
            nonlocal errors_in_a_row
            errors_in_a_row += 1
            # Every failed attempt calls this; one warning per outage is enough.
            level = logging.WARNING if errors_in_a_row == 1 else logging.DEBUG
            log.log(level, "%s: connection error: %r; retrying", self.name, exc)

        async def on_disconnected() -> None:
            if not self._closed.is_set():
                log.warning("%s: disconnected; reconnecting", self.name)

        async def on_reconnected() -> None:
            nonlocal errors_in_a_row
            errors_in_a_row = 0
            log.info("%s: reconnected", self.name)

        # nats-py retries the first connection and reconnects a lost one by itself, forever
        # with these options (with jitter between attempts).
        nc: Client = await unless_closed(self._closed, nats.connect(
            self.servers, name=self.name, connect_timeout=self.request_timeout,
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1.0,
            error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected))
        self._nc = nc
        errors_in_a_row = 0
        self._js = nc.jetstream(timeout=self.request_timeout)
        if self._closed.is_set():
            await nc.close()
            raise Closing

    async def _ensure_streams(self, js: JetStreamContext) -> None:
        nats = _import_nats()
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.stream, subjects=[self.subject])
            log.info("%s: created stream %s", self.name, self.stream)
        if self.dead_subject is None:
            return
        try:
            await js.find_stream_name_by_subject(self.dead_subject)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.dead_stream, subjects=[self.dead_subject])
            log.info("%s: created dead-letter stream %s", self.name, self.dead_stream)

    async def _recover(self, exc: Exception, failures: int) -> None:
        """After a failed fetch: drop the subscription (re-bound on the next fetch) and wait
        with backoff, or until closed."""
        delay = self._backoff(failures)
        log.warning("%s: fetch failed (%r); retrying in %.1fs", self.name, exc, delay)
        await self._unsubscribe()
        if self._nc is not None and self._nc.is_closed:
            self._nc = self._js = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout=delay)

    async def _consumer_gone(self) -> bool:
        """After an empty fetch: whether the consumer (or its stream) was deleted, checked at
        most every ``check_interval`` seconds. A fetch from a deleted consumer only times
        out, so without this the source would wait forever."""
        now = asyncio.get_running_loop().time()
        if now - self._checked_at < self.check_interval:
            return False
        self._checked_at = now
        nats = _import_nats()
        try:
            await self.jetstream.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            return True
        except Exception:
            return False  # a lost connection shows in the next fetch
        return False

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            # The connection may be gone; the server then forgets the subscription anyway.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _nak_quietly(self, batch: list[Msg]) -> None:
        for msg in batch:
            self.release()
            with contextlib.suppress(Exception):  # else redelivered after ack_wait
                await msg.nak()


def _is_fetch_timeout(exc: Exception) -> bool:
    nats = _import_nats()
    return isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError)
