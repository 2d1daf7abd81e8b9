"""A RabbitMQ source: one queue, manual acks, aio-pika's robust connection (``workhorse[sources]``).

Settling maps onto AMQP:

- ``ack()`` is ``basic.ack``.
- ``nack(delay)``: RabbitMQ cannot delay a requeue, so the message is republished (publisher
  confirms on) with its delivery count raised, then the original is acked. With a delay it
  goes to a delay queue that dead-letters expired messages back to the main queue through the
  default exchange. RabbitMQ expires messages only at the head of a queue, so one queue of
  mixed delays would hold short ones behind long ones: each delay is rounded up to a step of
  ``DELAY_STEPS`` and waits in that step's queue, ``<queue>.delay.<ms>``, whose messages all
  share one TTL (``x-message-ttl``) and so expire in order. A retry comes at most one step
  later than asked, never sooner. Delays past the last step wait in ``<queue>.delay`` with a
  per-message TTL. A crash between the republish and the ack leaves both copies: at least
  once, never lost.
- ``dead_letter(reason)``: with ``dead_letter_exchange`` set, ``basic.reject(requeue=False)``
  and the queue's dead-letter exchange routes it (RabbitMQ records the hop in ``x-death``;
  the reason is logged); returns True. Without it, False: the runtime keeps a workhorse dead
  job (a reject would drop the message).

``deliveries`` is 1 plus the ``x-workhorse-deliveries`` header this source maintains on
republished copies, plus the broker's own returns (``x-delivery-count`` on quorum queues,
else 1 when the message is flagged ``redelivered``). A consumer that dies leaves its unacked
messages to the broker, which requeues them when the connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from workhorse.backoff import exponential
from workhorse.sources.base import SourceClosed, decode_body
from workhorse.sources.common import Closing, SlotMessage, SlotSource, require, unless_closed

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustChannel,
        AbstractRobustConnection,
    )

log = logging.getLogger("workhorse.sources.rabbitmq")

#: The header counting this source's republished deliveries of a message.
DELIVERIES_HEADER = "x-workhorse-deliveries"
# Broker-managed headers that must not be copied onto a republished message.
_BROKER_HEADERS = ("x-delivery-count", "x-death", "x-first-death-exchange",
                   "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                   "x-last-death-queue", "x-last-death-reason")


def _import_aio_pika() -> Any:
    return require("aio_pika", hint="RabbitMQSource needs aio-pika: install workhorse[sources]")


def _text_headers(raw: Mapping[str, Any]) -> dict[str, str]:
    """The headers whose values are scalars, as strings (``x-death`` tables are left out)."""
    headers = {}
    for key, value in raw.items():
        if isinstance(value, bytes | bytearray):
            headers[key] = bytes(value).decode("utf-8", "replace")
        elif isinstance(value, str | int | float | bool):
            headers[key] = str(value)
    return headers


def _count(value: object, default: int) -> int:
    """A header's integer value, or ``default`` when it is missing or not a number."""
    if isinstance(value, int | float | str | bytes):
        with contextlib.suppress(ValueError):
            return int(value)
    return default


class RabbitMQMessage(SlotMessage["RabbitMQSource"]):
    """One delivery from the queue; settling it frees its slot in the source's prefetch."""

    #: The broker requeues a delivery when its channel closes.
    redeliverer = "the broker"

    def __init__(self, source: RabbitMQSource, message: AbstractIncomingMessage) -> None:
        raw = dict(message.headers or {})
        returns = _count(raw.get("x-delivery-count"), 1 if message.redelivered else 0)
        super().__init__(source, message.message_id or f"{source.queue}:{message.delivery_tag}",
                         decode_body(message.body), _text_headers(raw),
                         _count(raw.get(DELIVERIES_HEADER), 1) + returns)
        self._message = message

    async def ack(self) -> None:
        """Acknowledge the delivery."""
        async with self._settling("ack"):
            await self._message.ack()

    async def nack(self, delay: float = 0.0) -> None:
        """Republish (to the delay queue when ``delay`` > 0), then ack this delivery."""
        async with self._settling("nack"):
            self._message.channel  # noqa: B018 - raises if this delivery's channel is gone
            await self._source.republish(self._message, self._deliveries + 1, delay)
            await self._message.ack()

    async def dead_letter(self, reason: str) -> bool:
        """Reject without requeue, for the dead-letter exchange; False without one."""
        if self._source.dead_letter_exchange is None:
            return False
        async with self._settling("dead_letter"):
            await self._message.reject(requeue=False)
        log.info("%s: dead-lettered %s: %s", self._source.name, self._id, reason)
        return True


class RabbitMQSource(SlotSource):
    """Messages of one RabbitMQ queue, consumed with manual acks.

    ``declare``: declare the queue (durable, with ``x-dead-letter-exchange`` when
    ``dead_letter_exchange`` is set), the dead-letter exchange (direct) and its queue
    ``dead_letter_queue`` (default ``<queue>.dead``). Without it the queue must exist with
    matching arguments. The delay queue (``<queue>.delay``) is always declared: it is this
    source's own. The broker's ``prefetch_count`` is the prefetch asked of ``messages()``.
    The first connection is retried with capped exponential backoff (``reconnect_cap``); a
    lost one is reconnected by aio-pika every ``reconnect_interval`` seconds.
    """

    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672/", *, queue: str,
                 dead_letter_exchange: str | None = None, dead_letter_queue: str | None = None,
                 declare: bool = True, delay_queue: str | None = None,
                 reconnect_interval: float = 1.0, reconnect_cap: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self.queue = queue
        self.dead_letter_exchange = dead_letter_exchange
        self.dead_letter_queue = dead_letter_queue or f"{queue}.dead"
        self.declare = declare
        self.delay_queue = delay_queue or f"{queue}.delay"
        self.reconnect_interval = reconnect_interval
        self._backoff = exponential(base=0.1, cap=reconnect_cap)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._closed = asyncio.Event()
        #: The delay-step queues declared so far (on this connection's broker).
        self._step_queues: set[str] = set()
        #: Progress: deliveries dropped after a reconnect (besides ``received``, ``settled``).
        self.stale = 0

    @property
    def name(self) -> str:
        return f"rabbitmq:{self.queue}"

    async def messages(self, prefetch: int) -> AsyncIterator[RabbitMQMessage]:
        """Deliveries pushed by the broker, at most ``prefetch`` unsettled."""
        slots = self._open_slots(prefetch)
        if not await self._start(prefetch):
            return
        try:
            while not self._closed.is_set():
                await slots.acquire()
                message = await self._next_delivery()
                if message is None:
                    self.release()
                    return
                self.received += 1
                yield RabbitMQMessage(self, message)
        finally:
            # A stopping consumer nacks what it holds right after this: cancel the consumer
            # first, or the broker would push those messages' copies back to it.
            await self._stop_consuming()

    async def close(self) -> None:
        """Cancel the consumer, hand back deliveries not yet yielded, close the connection."""
        self._closed.set()
        await self._stop_consuming()
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def republish(self, message: AbstractIncomingMessage, deliveries: int,
                        delay: float) -> None:
        """Publish a confirmed copy of ``message`` to the delay queue (or straight to the
        queue when ``delay`` is 0), counting ``deliveries``."""
        aio_pika = _import_aio_pika()
        if self._channel is None:
            raise SourceClosed(f"{self.name} is closed")
        step = _step_of(delay) if delay > 0 else None
        headers = {k: v for k, v in (message.headers or {}).items() if k not in _BROKER_HEADERS}
        headers[DELIVERIES_HEADER] = deliveries
        copy = aio_pika.Message(
            message.body, headers=headers, content_type=message.content_type,
            content_encoding=message.content_encoding, delivery_mode=message.delivery_mode,
            priority=message.priority, correlation_id=message.correlation_id,
            reply_to=message.reply_to, message_id=message.message_id, type=message.type,
            app_id=message.app_id, timestamp=message.timestamp,
            # Past the last step, a TTL of its own; a step queue's TTL is the queue's.
            expiration=delay if delay > 0 and step is None else None)
        target = self.queue if delay <= 0 else await self._delay_queue_for(step)
        await self._channel.default_exchange.publish(copy, routing_key=target)

    async def _delay_queue_for(self, step: int | None) -> str:
        """The delay queue of ``step`` (ms), declared on first use; the per-message-TTL
        queue for None (past the last step)."""
        if step is None:
            return self.delay_queue
        name = f"{self.delay_queue}.{step}"
        if name not in self._step_queues:
            assert self._channel is not None
            await self._channel.declare_queue(name, durable=True, arguments={
                "x-message-ttl": step, "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.queue})
            self._step_queues.add(name)
        return name

    async def _start(self, prefetch: int) -> bool:
        """Connect, declare and start consuming, retrying with backoff; False if closed."""
        failures = 0
        while not self._closed.is_set():
            try:
                await self._connect_and_consume(prefetch)
                return True
            except Exception as exc:
                failures += 1
                delay = self._backoff(failures)
                log.warning("%s: cannot consume (%r); retrying in %.1fs", self.name, exc, delay)
                if self._connection is not None:
                    with contextlib.suppress(Exception):
                        await self._connection.close()
                    self._connection = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), timeout=delay)
        return False

    async def _connect_and_consume(self, prefetch: int) -> None:
        aio_pika = _import_aio_pika()
        # After the first connection aio-pika's robust connection reconnects by itself (every
        # ``reconnect_interval`` seconds) and restores the channel, its qos and the consumer.
        self._connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": self.name},
            reconnect_interval=self.reconnect_interval)
        self._connection.close_callbacks.add(self._on_lost)
        self._connection.reconnect_callbacks.add(self._on_reconnected)
        channel = await self._connection.channel(publisher_confirms=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=prefetch)
        await self.declare_topology(channel)
        self._queue = queue = await channel.get_queue(self.queue, ensure=True)
        self._consumer_tag = await queue.consume(self._deliver, no_ack=False)
        log.info("%s: consuming", self.name)

    async def declare_topology(self, channel: Any) -> None:
        """Declare on ``channel`` the delay queue and, with ``declare``, the queue and its
        dead letters (done by ``messages()``; call it to publish before consuming)."""
        aio_pika = _import_aio_pika()
        await channel.declare_queue(self.delay_queue, durable=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queue})
        if not self.declare:
            return
        arguments: dict[str, Any] = {}
        if self.dead_letter_exchange is not None:
            exchange = await channel.declare_exchange(
                self.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
            dead = await channel.declare_queue(self.dead_letter_queue, durable=True)
            await dead.bind(exchange, routing_key=self.queue)
            arguments = {"x-dead-letter-exchange": self.dead_letter_exchange,
                         "x-dead-letter-routing-key": self.queue}
        await channel.declare_queue(self.queue, durable=True, arguments=arguments)

    async def _next_delivery(self) -> AbstractIncomingMessage | None:
        """The next live delivery, or None once closed. Deliveries made on a channel that
        has since closed are dropped: the broker already requeued them."""
        while not self._closed.is_set():
            try:
                message = await unless_closed(self._closed, self._inbox.get())
            except Closing:
                return None
            try:
                message.channel  # noqa: B018 - raises once that channel is closed
            except Exception:
                self.stale += 1
                continue
            return message
        return None

    async def _stop_consuming(self) -> None:
        """Cancel the consumer and hand back the deliveries not yet yielded."""
        queue, tag, self._consumer_tag = self._queue, self._consumer_tag, None
        if queue is not None and tag is not None:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        while not self._inbox.empty():
            with contextlib.suppress(Exception):  # else requeued when the channel closes
                await self._inbox.get_nowait().nack(requeue=True)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    def _on_lost(self, _connection: Any, exc: BaseException | None = None) -> None:
        if not self._closed.is_set():
            log.warning("%s: connection lost (%r); reconnecting", self.name, exc)

    def _on_reconnected(self, _connection: Any) -> None:
        log.info("%s: reconnected", self.name)


#: The delays (milliseconds) a nack waits in a queue of its own: a delay is rounded up to the
#: next step, so the wait is at most one step longer than asked.
DELAY_STEPS = (50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000,
               300_000, 600_000, 1_800_000, 3_600_000)


def _step_of(delay: float) -> int | None:
    """The step (ms) a ``delay`` of seconds waits for, or None past the last step."""
    wanted = delay * 1000
    return next((step for step in DELAY_STEPS if step >= wanted), None)
