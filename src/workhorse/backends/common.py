"""Pieces shared by several backends: tokens, token buckets and cross-loop waiters."""

from __future__ import annotations

import asyncio
import secrets
import threading


def new_token() -> str:
    """A fresh attempt token: fences a lease so a stale owner cannot ack."""
    return secrets.token_hex(8)


def refill(tokens: float, updated: float, now: float, rate: float, burst: int) -> float:
    """The tokens in a bucket at ``now`` that held ``tokens`` at ``updated``."""
    return min(float(burst), tokens + max(0.0, now - updated) * rate)


class Waiters:
    """Futures of tasks waiting for an event, each woken on its own event loop.

    A backend instance may serve several loops (the worker's and ``enqueue_sync``'s), so a
    plain asyncio.Event, bound to one loop, would not do.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def add(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]:
        """Register the calling task; pass the result to ``wait``."""
        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        with self._lock:
            self._waiting.add(entry)
        return entry

    async def wait(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]],
                   timeout: float) -> bool:
        """Wait until woken (True) or ``timeout`` passes (False)."""
        try:
            await asyncio.wait_for(asyncio.shield(entry[1]), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiting.discard(entry)

    def wake_all(self) -> None:
        """Wake every waiter, from any thread."""
        with self._lock:
            waiting, self._waiting = self._waiting, set()
        for loop, future in waiting:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
