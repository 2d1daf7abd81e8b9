"""Calls into an event loop from another thread, bounded on both sides."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def call_in_loop(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[T]],
                 timeout: float, slack: float) -> T:
    """From a thread other than ``loop``'s: ``await make()`` on ``loop``, bounded there by
    ``timeout`` and here by ``timeout + slack`` (so a loop too busy to run it is told apart).

    Raises TimeoutError past either bound, RuntimeError if the loop is closed, or what
    ``make()`` raised.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(make(), timeout)

    future = asyncio.run_coroutine_threadsafe(bounded(), loop)
    try:
        return future.result(timeout + slack)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise
