"""Lease renewal off the worker's event loop, and a watch on how responsive that loop is.

A worker must renew the leases of its running jobs for as long as its process lives, even
while an async handler blocks the event loop (``time.sleep``, a long computation): renewed
from that loop, the leases would lapse, the reaper of another worker would requeue the jobs
and they would run twice while the first runs go on. So the heartbeat runs on a daemon
thread with an event loop of its own. Every backend serves several loops at once (Redis a
client per loop, PostgreSQL a pool per loop, SQLite a database thread, memory a lock).

What a heartbeat learns (jobs to cancel, leases lost) is handed to the worker's loop with
``call_soon_threadsafe``, together with the snapshot of runs it was about, so the worker
acts only on the runs the reply was about. The same thread pings the worker's loop and logs
one warning per stall, with how long the loop has not answered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping

from workhorse.backends.base import Backend, HeartbeatReply, WorkerInfo

log = logging.getLogger("workhorse.worker")

#: A snapshot of the runs whose leases to renew: job id -> the worker's own run object.
Snapshot = Mapping[str, object]
#: Called on the worker's loop with a heartbeat's reply and the snapshot it was about.
OnReply = Callable[[HeartbeatReply, Snapshot], None]

#: Longest the worker's loop may leave a ping unanswered before a warning.
DEFAULT_STALL_AFTER = 1.0
#: At most this many job ids are named in a stall warning.
_NAMED = 5


class LeaseKeeper:
    """Beats every ``interval`` seconds from a thread of its own, extending by ``lease`` the
    leases of the runs ``snapshot()`` returns, and watches the loop that calls ``start``.

    ``snapshot`` is called on the keeper's thread, so it must be safe to call from another
    thread (a ``dict.copy()`` is: one step under the GIL, and locked on free-threaded
    builds). ``on_reply`` runs on the worker's loop.
    """

    def __init__(self, backend: Backend, worker: WorkerInfo, *, lease: float, interval: float,
                 snapshot: Callable[[], Snapshot], on_reply: OnReply,
                 stall_after: float = DEFAULT_STALL_AFTER) -> None:
        self._backend = backend
        self._worker = worker
        self._lease = lease
        self._interval = interval
        self._snapshot = snapshot
        self._on_reply = on_reply
        self._stall_after = stall_after
        self._lock = threading.Lock()
        self._stopping = False
        self._owner: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        #: Resolved when the thread has finished, however it ends.
        self._ended: concurrent.futures.Future[None] = concurrent.futures.Future()

    def start(self) -> None:
        """Start the thread; call from the worker's loop, the one that gets the replies."""
        self._owner = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._main, name=f"workhorse-leases:{self._worker.id}", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 10.0) -> bool:
        """Stop beating and end the thread (its store connections are closed); False if it
        had not ended after ``timeout`` seconds (it is a daemon, left to the process)."""
        with self._lock:
            self._stopping = True
            loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed already
                loop.call_soon_threadsafe(stop_event.set)
        if self._thread is None:
            return True
        ended = asyncio.wrap_future(self._ended)
        # Bounded: a store call that hangs past its own timeouts must not hang the worker's
        # shutdown; the thread is a daemon and is left to end with the process.
        await asyncio.wait({ended}, timeout=timeout)
        if not ended.done():
            log.warning("the lease keeper thread did not stop within %g s", timeout)
            return False
        self._thread.join()  # it has finished its work; this only waits for it to exit
        return True

    # -- on the keeper's thread ----------------------------------------------------------------

    def _main(self) -> None:
        try:
            # asyncio.run closes what the backend made for this loop (the Redis client, the
            # PostgreSQL pool) as it cancels the tasks left when the keeper ends.
            asyncio.run(self._run())
        except Exception:
            log.exception("the lease keeper failed; leases are no longer renewed")
        finally:
            self._ended.set_result(None)

    async def _run(self) -> None:
        stop_event = asyncio.Event()
        with self._lock:
            if self._stopping:
                return
            self._loop, self._stop_event = asyncio.get_running_loop(), stop_event
        tasks = [asyncio.create_task(self._beat(), name="lease-keeper:beat"),
                 asyncio.create_task(self._watch(), name="lease-keeper:watch")]
        try:
            await stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            snapshot = self._snapshot()
            try:
                reply = await self._backend.heartbeat(self._worker, list(snapshot), self._lease)
            except Exception as exc:  # the store may be away; the next beat tries again
                log.warning("heartbeat failed: %s", exc)
                continue
            if reply.cancel or reply.lost:
                self._to_owner(self._on_reply, reply, snapshot)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            answered: asyncio.Future[None] = loop.create_future()
            sent = time.monotonic()
            if not self._to_owner(_answer, loop, answered):
                return
            await asyncio.wait({answered}, timeout=self._stall_after)
            if not answered.done():
                running = list(self._snapshot())
                named = ", ".join(running[:_NAMED]) + (", ..." if len(running) > _NAMED else "")
                log.warning(
                    "worker %s: event loop blocked for %.1f s so far (a handler blocking it?); "
                    "leases are still renewed, but nothing else of this worker runs meanwhile; "
                    "running: %s", self._worker.id, time.monotonic() - sent, named or "none")
                await answered
                log.warning("worker %s: event loop answered again after %.1f s",
                            self._worker.id, time.monotonic() - sent)
            await asyncio.sleep(self._stall_after / 2)

    def _to_owner(self, callback: Callable[..., None], *args: object) -> bool:
        """Run ``callback(*args)`` on the worker's loop; False once that loop is closed."""
        assert self._owner is not None
        try:
            self._owner.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True


def _answer(loop: asyncio.AbstractEventLoop, answered: asyncio.Future[None]) -> None:
    """On the worker's loop: tell the keeper's loop that a ping got through."""
    with contextlib.suppress(RuntimeError):  # the keeper's loop has closed meanwhile
        loop.call_soon_threadsafe(_resolve, answered)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
