"""The connections of one event loop: a pool for the verbs and one LISTEN connection.

psycopg's async connections and pools belong to the loop that made them, and one backend
may serve several loops (a worker's and each ``enqueue_sync``'s ``asyncio.run``), so each
loop gets its own ``LoopConnections``. A keeper task closes them when the loop shuts down
(``asyncio.run`` cancels every task it leaves), or when the backend closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from workhorse import codec
from workhorse.errors import QueueFull, StoreError, StoreFull

log = logging.getLogger("workhorse.backends.postgres")

#: The SQLSTATE that ``enqueue`` raises for a full queue.
QUEUE_FULL = "WH001"


@contextlib.contextmanager
def store_errors(where: str, timeout: float) -> Iterator[None]:
    """Turn psycopg's errors into workhorse's: StoreError, or QueueFull, or StoreFull."""
    try:
        yield
    except psycopg.errors.DiskFull as exc:
        raise StoreFull(f"PostgreSQL at {where} is out of disk space: {exc}") from exc
    except PoolTimeout as exc:
        raise StoreError(
            f"no connection to PostgreSQL at {where} within {timeout:g} s: "
            "is the server up and reachable?"
        ) from exc
    except psycopg.OperationalError as exc:
        raise StoreError(f"the connection to PostgreSQL at {where} failed: {exc}") from exc
    except psycopg.Error as exc:
        if exc.sqlstate == QUEUE_FULL:
            raise QueueFull(exc.diag.message_primary or str(exc)) from exc
        raise StoreError(f"PostgreSQL at {where} failed: {exc}") from exc


class LoopConnections:
    """The pool and the listener of the running loop; made inside it."""

    def __init__(self, conninfo: str, channel_query: str, *, max_size: int,
                 timeout: float, name: str) -> None:
        self.loop = asyncio.get_running_loop()
        self._made: weakref.WeakSet[psycopg.AsyncConnection[TupleRow]] = weakref.WeakSet()
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
            conninfo, kwargs={"autocommit": True}, min_size=1, max_size=max_size,
            timeout=timeout, open=False, name=name, configure=self._made_one,
        )
        self.listener = Listener(conninfo, channel_query)
        self._opened = False
        self._keeper = self.loop.create_task(self._keep(), name=f"{name}:keeper")

    async def open(self) -> None:
        """Start the pool; idempotent. Connections are made in the background."""
        if not self._opened:
            await self.pool.open()
            self._opened = True

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        """A pooled connection for one statement."""
        task = asyncio.current_task()
        pending = 0 if task is None else task.cancelling()
        async with self.pool.connection() as conn:
            # The pool waits with asyncio.wait_for, which on Python 3.11 loses a cancellation
            # that arrives as a connection is handed over (fixed in 3.12): a worker stopping
            # would then run on. Deliver it.
            if task is not None and task.cancelling() > pending:
                raise asyncio.CancelledError
            yield conn

    async def close(self) -> None:
        """Close the listener and the pool; call from their own loop."""
        self._keeper.cancel()
        await asyncio.wait([self._keeper])

    async def _made_one(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        self._made.add(conn)

    async def _keep(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await self.listener.close()
            try:
                await self.pool.close()
            except BaseException:
                # When asyncio.run shuts its loop down it cancels the pool's own tasks too,
                # and the pool's close gives up on seeing them cancelled: close what it made.
                for conn in list(self._made):
                    with contextlib.suppress(Exception):
                        await conn.close()


class Listener:
    """One LISTEN connection and the tasks of its loop waiting for a notification.

    Waiters are futures registered before the state they wait on is read, so that a
    notification arriving between that read and the wait is not lost. If the connection
    drops, every waiter is woken to look again; the next ``start`` connects anew.
    """

    def __init__(self, conninfo: str, channel_query: str) -> None:
        self._conninfo = conninfo
        self._channel_query = channel_query
        self._starting = asyncio.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._work: dict[asyncio.Future[None], frozenset[str]] = {}
        self._jobs: dict[str, set[asyncio.Future[None]]] = {}
        #: Counts work notifications; ``_last_work`` holds the count at each queue's latest.
        self.work_seen = 0
        self._last_work: dict[str, int] = {}

    @property
    def listening(self) -> bool:
        """True while the connection is up and LISTENing."""
        return self._reader is not None and not self._reader.done()

    async def start(self) -> None:
        """Connect and LISTEN, unless already listening; raises psycopg errors."""
        if self.listening:
            return
        async with self._starting:
            if self.listening:
                return
            if self._closed:
                raise StoreError("the PostgreSQL backend was closed")
            conn = await listening_connection(self._conninfo, self._channel_query)
            self._conn = conn
            self._reader = asyncio.get_running_loop().create_task(
                self._read(conn), name="workhorse-postgres:listen")

    async def close(self) -> None:
        """Stop listening for good and wake every waiter."""
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._wake_all()

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for note in conn.notifies():
                self._dispatch(note.payload)
        except psycopg.Error as exc:
            log.warning("lost the PostgreSQL LISTEN connection: %s", exc)
            with contextlib.suppress(Exception):
                await conn.close()
        finally:
            # Whatever ended the reading, waiters look at the store again.
            self._wake_all()

    # -- waiters ---------------------------------------------------------------------------

    def watch_work(self, queues: frozenset[str]) -> asyncio.Future[None]:
        """A future resolved by the next work notification for one of ``queues``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._work[future] = queues
        return future

    def unwatch_work(self, future: asyncio.Future[None]) -> None:
        self._work.pop(future, None)

    def watch_job(self, job_id: str) -> asyncio.Future[None]:
        """A future resolved when job ``job_id`` may have finished."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.setdefault(job_id, set()).add(future)
        return future

    def unwatch_job(self, job_id: str, future: asyncio.Future[None]) -> None:
        futures = self._jobs.get(job_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._jobs[job_id]

    def work_since(self, queues: frozenset[str], seen: int) -> bool:
        """Whether work was notified for one of ``queues`` after ``work_seen`` was ``seen``."""
        return any(self._last_work.get(queue, 0) > seen for queue in queues)

    def _dispatch(self, payload: str) -> None:
        try:
            message = codec.decode(payload)
        except msgspec.DecodeError:
            return
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind in ("w", "f") and isinstance(message[-1], str):
            queue = message[-1]
            self.work_seen += 1
            self._last_work[queue] = self.work_seen
            for future, queues in self._work.items():
                if queue in queues:
                    _resolve(future)
        if kind == "f" and len(message) == 3:
            for future in self._jobs.get(message[1], ()):
                _resolve(future)
        elif kind == "c":
            for futures in self._jobs.values():
                for future in futures:
                    _resolve(future)

    def _wake_all(self) -> None:
        for future in self._work:
            _resolve(future)
        for futures in self._jobs.values():
            for future in futures:
                _resolve(future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def listening_connection(conninfo: str, channel_query: str) -> psycopg.AsyncConnection[Any]:
    """A new autocommit connection that LISTENs on the channel ``channel_query`` names."""
    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        cursor = await conn.execute(channel_query)
        row = await cursor.fetchone()
        assert row is not None
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(row[0])))
    except BaseException:
        await conn.close()
        raise
    return conn
