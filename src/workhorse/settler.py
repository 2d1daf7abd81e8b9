"""Batching the ends of runs: many acks, retries and burials in one store call."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from workhorse.backends.base import Backend, Settlement

#: Runs a store call, retrying while the store is away (the worker's ``_persist``).
Persist = Callable[[str, Callable[[], Awaitable[list[bool]]]], Awaitable[list[bool]]]


class Settler:
    """Collects settlements and sends them to the store together.

    While one ``settle`` call is in flight, the runs that end meanwhile wait and go in the
    next call, so an idle worker settles at once and a busy one in batches, with no timer.
    The flushing happens in ``run()``, a task the worker owns, so a run cancelled while it
    waits for its settlement cannot strand the others.
    """

    def __init__(self, backend: Backend, persist: Persist) -> None:
        self._backend = backend
        self._persist = persist
        self._pending: list[tuple[Settlement, Callable[[bool], None]]] = []
        self._wake = asyncio.Event()
        #: Set while nothing is pending or in flight.
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, settlement: Settlement, done: Callable[[bool], None]) -> None:
        """Queue ``settlement``; ``done`` gets True once it is stored, False if its token was
        stale. The caller does not wait: a run's task ends when its handler does."""
        self._pending.append((settlement, done))
        self._idle.clear()
        self._wake.set()

    async def settle(self, settlement: Settlement) -> bool:
        """Queue ``settlement`` and wait: True once stored, False if its token was stale."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.submit(settlement, future.set_result)
        return await future

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued settlement is stored; False if not within ``timeout``."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Flush pending settlements until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                moves = [settlement for settlement, _ in batch]
                done = await self._persist("settle", functools.partial(self._backend.settle, moves))
                for (_, callback), ok in zip(batch, done, strict=True):
                    callback(ok)
            self._idle.set()
