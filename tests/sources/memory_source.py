"""A minimal in-test Source without dead letters: a list of bodies, settles recorded."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any

from workhorse.sources.base import Message


@dataclasses.dataclass(eq=False)
class ListMessage:
    source: ListSource
    id: str
    body: Any
    headers: Mapping[str, str]
    deliveries: int

    async def ack(self) -> None:
        self.source.settled.append(("ack", self.id, None))

    async def nack(self, delay: float = 0.0) -> None:
        self.source.settled.append(("nack", self.id, delay))
        self.source.queue.put_nowait((self.id, self.body, self.deliveries + 1))

    async def dead_letter(self, reason: str) -> bool:
        self.source.settled.append(("dead_letter", self.id, reason))
        return False


class ListSource:
    """Delivers ``bodies`` (ids "0", "1", ...), and nacked ones again; never dead-letters."""

    name = "list"

    def __init__(self, bodies: list[Any], headers: Mapping[str, str] | None = None, *,
                 deliveries: int = 1) -> None:
        self.queue: asyncio.Queue[tuple[str, Any, int]] = asyncio.Queue()
        for number, body in enumerate(bodies):
            self.queue.put_nowait((str(number), body, deliveries))
        self.headers = dict(headers or {})
        self.settled: list[tuple[str, str, Any]] = []
        self.closed = False

    async def messages(self, prefetch: int) -> AsyncIterator[Message]:
        while not self.closed:
            message_id, body, deliveries = await self.queue.get()
            yield ListMessage(self, message_id, body, self.headers, deliveries)

    async def close(self) -> None:
        self.closed = True
