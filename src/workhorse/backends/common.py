"""Pieces shared by several backends: tokens, token buckets, cross-loop waiters and the
JSON of attempt histories."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import threading
from collections.abc import Sequence

import msgspec

from workhorse import codec
from workhorse.backends.base import AttemptRecord, JobRecord, State


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


def refuse_running(records: Sequence[JobRecord]) -> None:
    """ValueError if ``records`` (to ``restore``) hold a RUNNING job."""
    if any(r.state is State.RUNNING for r in records):
        raise ValueError("a RUNNING job cannot be restored: its lease is not portable")


def history_to_json(history: Sequence[AttemptRecord]) -> bytes:
    """A job's attempt history as the JSON list the stores keep (times as numbers)."""
    return codec.encode([dataclasses.asdict(attempt) for attempt in history], what="history")


def history_from_json(data: bytes | str | None) -> list[AttemptRecord]:
    """The attempt history stored as JSON; fields may be absent, and times may be text
    (Lua writes the store clock's exact text)."""
    if not data:
        return []
    try:
        items = codec.decode(data)
    except msgspec.DecodeError:  # a hand-edited store: the history is only for people
        return []
    return history_from_items(items)


def history_from_items(items: object) -> list[AttemptRecord]:
    """The attempt history from its decoded JSON (a list of objects)."""
    if not isinstance(items, list):  # Lua's cjson writes an empty list as {}
        return []
    return [_attempt(item) for item in items if isinstance(item, dict)]


def _attempt(item: dict[str, object]) -> AttemptRecord:
    status = _number(item.get("status"))
    return AttemptRecord(
        attempt=int(_number(item.get("attempt")) or 0),
        status=None if status is None else int(status),
        error=_text(item.get("error")), traceback=_text(item.get("traceback")),
        started_at=_number(item.get("started_at")),
        finished_at=_number(item.get("finished_at")),
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
