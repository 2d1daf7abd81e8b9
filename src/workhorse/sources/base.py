"""The ``Source`` protocol: an async stream of messages, each acked, nacked or dead-lettered.

The runtime decides; a source only carries the decision to its server:

- ``ack()``: the message is done (status 2xx, 444, or 499 cancelled).
- ``nack(delay)``: deliver it again after ``delay`` seconds (a retryable status with
  deliveries left). A source without delayed redelivery waits out ``delay`` itself or
  lets its server's redelivery timer do it; either way the message is not lost.
- ``dead_letter(reason)``: the message is bad or out of retries. A source with a dead-letter
  mechanism of its own (a RabbitMQ dead-letter exchange, a stream or table for dead rows)
  moves it there and returns True; one without returns False, and the runtime stores a
  workhorse dead job holding the message before it calls ``ack()``.

Every settle call is made at most once per message, and a message that is never settled
(its consumer died) must come back by the server's own means: a visibility timeout, a
pending-entries reclaim, a broker redelivery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

from workhorse import codec


def decode_body(data: bytes | str) -> Any:
    """A message's payload as ``Message.body`` holds it: the decoded JSON where it is JSON,
    else ``data`` as it came."""
    try:
        return codec.decode(data)
    except Exception:
        return data


class SourceClosed(Exception):
    """Raised by a settle call when the source was closed or lost the message's delivery
    (its server went away); the message will be redelivered by the server."""


@runtime_checkable
class Message(Protocol):
    """One delivery of one message from a source."""

    #: The source's own id for the message (a stream entry id, a row key, a delivery tag).
    @property
    def id(self) -> str: ...

    #: The message's payload, decoded: a JSON object or value where the bytes are JSON,
    #: else the raw bytes.
    @property
    def body(self) -> Any: ...

    #: String metadata carried with the message (may hold a W3C trace context).
    @property
    def headers(self) -> Mapping[str, str]: ...

    #: How many times this message has been delivered, counting this delivery (from 1).
    @property
    def deliveries(self) -> int: ...

    async def ack(self) -> None:
        """The message is done; the server forgets it."""

    async def nack(self, delay: float = 0.0) -> None:
        """Deliver the message again, no sooner than ``delay`` seconds from now."""

    async def dead_letter(self, reason: str) -> bool:
        """Move the message to the source's dead letters; False if the source has none
        (the runtime then keeps it as a workhorse dead job and acks it)."""


@runtime_checkable
class Source(Protocol):
    """A stream of messages from an outside server.

    ``messages()`` connects on first use, yields deliveries until ``close()`` is called,
    and reconnects with backoff when the server goes away (logging each attempt). It never
    yields more than ``prefetch`` unsettled messages, so the consumer's concurrency bounds
    what the source holds.
    """

    #: A short readable name, e.g. ``redis-stream:orders/workers``; used in logs and metrics.
    @property
    def name(self) -> str: ...

    def messages(self, prefetch: int) -> AsyncIterator[Message]:
        """Deliveries, at most ``prefetch`` of them unsettled at once."""
        ...

    async def close(self) -> None:
        """Stop delivering and close the connections. The runtime first stops reading
        ``messages()`` and settles (or nacks) every message it was given, then calls this."""
