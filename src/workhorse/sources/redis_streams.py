"""A Redis Streams source: a consumer group read with XREADGROUP, dead consumers' entries
reclaimed with XAUTOCLAIM.

How each settle maps onto the stream (every one a single command or a MULTI, so a consumer
that dies between two calls loses nothing: an entry leaves the pending list only by XACK):

- ``ack``: XACK (and XDEL with ``delete_acked``).
- ``nack(delay)``: the entry stays pending; XCLAIM ... IDLE sets its idle time so that it
  reaches ``claim_idle`` after ``delay`` seconds, when any consumer's XAUTOCLAIM takes it and
  Redis counts one more delivery. A delay longer than ``claim_idle`` waits ``claim_idle``.
- ``dead_letter(reason)``: XADD of the entry to the dead stream and XACK, in one MULTI.

While a message is in flight its idle time is reset every ``claim_idle / 3`` seconds, so a
slow handler's entry is not taken from a live consumer; only a dead one's entries age.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from workhorse.backoff import exponential
from workhorse.sources.base import Message, decode_body
from workhorse.sources.common import InFlight, SettleOnce, require, retrying
from workhorse.tasks import cancellable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("workhorse.source")
T = TypeVar("T")


#: Sets the idle time of those of ARGV[4..] (entry ids) still pending for consumer ARGV[2]
#: of group ARGV[1] to ARGV[3] ms, without counting a delivery. Checked in one step, so an
#: entry another consumer has reclaimed meanwhile is left with it.
TOUCH_LUA = """
local touched = 0
for i = 4, #ARGV do
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #owned > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    touched = touched + 1
  end
end
return touched
"""


def _redis() -> Any:
    """The redis package, imported on first use (an optional dependency)."""
    return require("redis", "redis.asyncio",
                   hint="RedisStreamSource needs redis-py: install workhorse[redis]")


@dataclasses.dataclass(eq=False)
class RedisStreamMessage(SettleOnce):
    """One delivery of a stream entry to this consumer."""

    source: RedisStreamSource
    id: str
    fields: dict[str, str]
    body: Any
    headers: Mapping[str, str]
    deliveries: int

    def _settle(self) -> None:
        self._settle_once(self.id)
        self.source._in_flight.settled(self.id)

    async def ack(self) -> None:
        """XACK the entry (and XDEL it with ``delete_acked``)."""
        self._settle()
        await self.source._ack(self.id)

    async def nack(self, delay: float = 0.0) -> None:
        """Leave the entry pending, claimable again after ``delay`` (at most ``claim_idle``)."""
        self._settle()
        await self.source._nack(self.id, delay)

    async def dead_letter(self, reason: str) -> bool:
        """XADD the entry to the dead stream and XACK it, atomically; True."""
        self._settle()
        await self.source._dead_letter(self, reason)
        return True


class RedisStreamSource:
    """Messages of the Redis stream ``stream`` read as consumer ``consumer`` of ``group``.

        source = RedisStreamSource("redis://127.0.0.1:6379/0", "orders", "billing")
        worker.consume(source, "bill_order", concurrency=8)

    The group is created (with MKSTREAM, from the stream's start) if missing. New entries
    come with XREADGROUP; entries pending for more than ``claim_idle`` seconds (their
    consumer died, or they were nacked) are reclaimed with XAUTOCLAIM first. An entry's body
    is its ``body`` field, JSON-decoded (the raw text if it is not JSON), or the whole field
    map when it has no ``body``; its headers are the JSON object in its ``headers`` field.
    ``add()`` writes entries in that shape. Dead letters go to ``dead_stream`` (default
    ``{stream}:dead``) with the entry's fields plus ``reason``, ``message_id`` and
    ``deliveries``; ``max_len`` trims the streams ``add()`` and dead letters write to
    (approximately). ``block`` bounds each XREADGROUP wait, in seconds.

    ``url_or_client`` is a URL or a ``redis.asyncio.Redis`` (then not closed by ``close()``;
    it must not decode responses). On a connection error the source reconnects with capped
    exponential backoff, logging each attempt; settle calls retry the same way until the
    source is closed, when they raise SourceClosed (the entry stays pending: not lost).
    """

    def __init__(self, url_or_client: str | aioredis.Redis, stream: str, group: str,
                 consumer: str | None = None, *, claim_idle: float = 30.0,
                 dead_stream: str | None = None, max_len: int | None = None,
                 block: float = 1.0, delete_acked: bool = False,
                 reconnect_cap: float = 5.0) -> None:
        if claim_idle <= 0:
            raise ValueError("claim_idle must be positive")
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.claim_idle = claim_idle
        self.dead_stream = dead_stream or f"{stream}:dead"
        self.max_len = max_len
        self.block = block
        self.delete_acked = delete_acked
        self._backoff = exponential(base=0.05, cap=reconnect_cap)
        if isinstance(url_or_client, str):
            self._client: aioredis.Redis = _redis().asyncio.Redis.from_url(url_or_client)
            self._owns_client = True
        else:
            self._client = url_or_client
            self._owns_client = False
        # While a message is in flight its entry is kept young, so no one reclaims it.
        self._in_flight: InFlight[RedisStreamMessage] = InFlight(
            self.name, self._renew, claim_idle / 3, log)
        self._closed = False
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._touch = self._client.register_script(TOUCH_LUA)

    @property
    def name(self) -> str:
        return f"redis-stream:{self.stream}/{self.group}"

    # -- producing ---------------------------------------------------------------------------

    async def add(self, body: Any, headers: Mapping[str, str] | None = None) -> str:
        """XADD ``body`` (JSON-encoded) and ``headers`` to the stream; the entry id."""
        fields: dict[str, str] = {"body": json.dumps(body)}
        if headers:
            fields["headers"] = json.dumps(dict(headers))
        entry_id = await self._client.xadd(self.stream, fields,  # type: ignore[arg-type]
                                           maxlen=self.max_len, approximate=True)
        return _text(entry_id)

    # -- consuming ---------------------------------------------------------------------------

    def messages(self, prefetch: int) -> AsyncIterator[Message]:
        """Reclaimed, then new entries; at most ``prefetch`` unsettled at once."""
        # XREADGROUP blocks for new entries itself: no polling between reads.
        return self._in_flight.deliver(prefetch, self._read, closed=lambda: self._closed,
                                       give_back=self._give_back, poll_interval=None)

    async def _read(self, count: int) -> list[RedisStreamMessage]:
        return await self._retrying("read", functools.partial(self._fetch, count))

    async def _give_back(self, message: RedisStreamMessage) -> None:
        """An entry read but never handed out: claimable again at once."""
        await self._nack(message.id, self.claim_idle, retry=False)

    async def _fetch(self, count: int) -> list[RedisStreamMessage]:
        await self._ensure_group()
        try:
            return await self._read_entries(count)
        except _redis().exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                raise
            # The stream or group went away (deleted, or a server restarted without its
            # data): create them again on the next read.
            log.warning("%s: %s; creating the group again", self.name, exc)
            self._group_ready = False
            return []

    async def _read_entries(self, count: int) -> list[RedisStreamMessage]:
        reclaimed = await self._reclaim(count)
        if reclaimed:
            return reclaimed
        # A blocking read: a stop cancels it, and redis-py can swallow that cancel.
        reply: Any = await cancellable(self._client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count,
            block=max(1, int(self.block * 1000))))
        return [self._message(entry_id, fields, 1)
                for _stream, entries in reply or [] for entry_id, fields in entries]

    async def _reclaim(self, count: int) -> list[RedisStreamMessage]:
        idle = int(self.claim_idle * 1000)
        # A cursor, so entries behind many young ones of live consumers are reached too.
        reply: Any = await self._client.xautoclaim(self.stream, self.group, self.consumer, idle,
                                              start_id=self._claim_cursor, count=count)
        self._claim_cursor = _text(reply[0])
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        if not entries:
            return []
        # XAUTOCLAIM counted the delivery; XPENDING tells how many there have been.
        pending: Any = await self._client.xpending_range(
            self.stream, self.group, min=entries[0][0], max=entries[-1][0],
            count=len(entries), consumername=self.consumer)
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        messages = [self._message(entry_id, fields, counts.get(_text(entry_id), 2))
                    for entry_id, fields in entries]
        log.info("%s: reclaimed %d pending entries idle over %.1fs", self.name,
                 len(messages), self.claim_idle)
        return messages

    def _message(self, entry_id: bytes | str, raw: Mapping[Any, Any],
                 deliveries: int) -> RedisStreamMessage:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        body: Any = decode_body(fields["body"]) if "body" in fields else fields
        headers: dict[str, str] = {}
        if "headers" in fields:
            with contextlib.suppress(ValueError, AttributeError):
                headers = {str(k): str(v) for k, v in json.loads(fields["headers"]).items()}
        return RedisStreamMessage(self, _text(entry_id), fields, body, headers, deliveries)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except _redis().exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _renew(self, messages: list[RedisStreamMessage]) -> None:
        await self._touch_entries([message.id for message in messages], 0)

    # -- settling ----------------------------------------------------------------------------

    async def _ack(self, entry_id: str) -> None:
        async def ack() -> None:
            if self.delete_acked:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.xack(self.stream, self.group, entry_id)
                    pipe.xdel(self.stream, entry_id)
                    await pipe.execute()
            else:
                await self._client.xack(self.stream, self.group, entry_id)
        await self._retrying("ack", ack)

    async def _nack(self, entry_id: str, delay: float, *, retry: bool = True) -> None:
        # Redis clamps a delivery time in the future to now, so the longest delay is
        # claim_idle: the entry then looks as old as a dead consumer's.
        idle_ms = int(max(0.0, self.claim_idle - delay) * 1000)

        async def nack() -> None:
            await self._touch_entries([entry_id], idle_ms)
        if retry:
            await self._retrying("nack", nack)
        else:
            await nack()

    async def _touch_entries(self, ids: list[str], idle_ms: int) -> None:
        await self._touch(keys=[self.stream],
                          args=[self.group, self.consumer, idle_ms, *ids])

    async def _dead_letter(self, message: RedisStreamMessage, reason: str) -> None:
        fields = {**message.fields, "reason": reason, "message_id": message.id,
                  "deliveries": str(message.deliveries)}

        async def dead() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.dead_stream, fields,  # type: ignore[arg-type]
                          maxlen=self.max_len, approximate=True)
                pipe.xack(self.stream, self.group, message.id)
                await pipe.execute()
        await self._retrying("dead-letter", dead)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again with backoff while Redis is unreachable; SourceClosed once the
        source is closed."""
        redis = _redis()

        async def forget_group() -> None:
            self._group_ready = False  # a restarted server may have lost the group
        return await retrying(
            log, self.name, what, call, backoff=self._backoff, closed=lambda: self._closed,
            errors=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError),
            on_error=forget_group)

    async def close(self) -> None:
        """Stop delivering; close the connection if the source opened it."""
        self._closed = True
        await self._in_flight.close()
        if self._owns_client:
            await self._client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
