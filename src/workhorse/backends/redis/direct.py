"""Commands on connections the backend keeps itself, past redis-py's client layers.

redis-py's asyncio client runs every command through its pool's lock, a retry wrapper and
observability hooks: about 60 µs of CPU a command on the benchmark machine, against about 25
for sending the command and reading its reply on one of its connections. The Lua scripts are
nearly every command a producer or a worker sends, so they go this way; blocking pops and
pub/sub stay on the client. Connections are still redis-py's (its connect, AUTH, TLS, RESP
parsing); only the per-command wrapping is ours.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

#: Idle connections kept for reuse; more concurrent commands open more and close the extra.
MAX_IDLE = 16


async def _has_data(conn: AbstractConnection) -> bool:
    can_read = getattr(conn, "can_read", None)
    if can_read is not None:  # redis-py 8: a look at the buffers
        return bool(await can_read())
    # redis-py 5 to 7 (the bench environment pins 5 for arq's sake): can_read_destructive
    # polls the socket under a zero timeout, about 11 µs a call. redis-py 8's own check is
    # this look at the connection's stream reader: an end of file, or bytes nobody read.
    stream = getattr(conn, "_reader", None)
    if isinstance(stream, asyncio.StreamReader):
        return stream.at_eof() or bool(stream._buffer)  # type: ignore[attr-defined]
    return bool(await conn.can_read_destructive())


class DirectConnections:
    """Runs each command on a connection of its own, one command at a time per connection."""

    def __init__(self, pool: ConnectionPool) -> None:
        #: Only the pool's connection class and options are used; it opens nothing itself.
        self._pool = pool
        self._idle: list[AbstractConnection] = []

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; raises what redis-py's client would."""
        conn = await self._acquire()
        try:
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            reply = await conn.read_response()
        except ResponseError:
            await self._release(conn)  # an error reply: the connection is in step
            raise
        except BaseException:
            # Cancelled or broken mid-command: its reply may still be on the way, so the
            # connection can never be reused.
            await conn.disconnect(nowait=True)
            raise
        await self._release(conn)
        return reply

    async def _acquire(self) -> AbstractConnection:
        while self._idle:
            conn = self._idle.pop()
            try:
                # Unread data or an end of file on an idle connection: the server went away
                # (or a reply was left behind); open a new one instead.
                if conn.is_connected and not await _has_data(conn):
                    return conn
            except (RedisConnectionError, OSError):
                pass
            await conn.disconnect(nowait=True)
        # A new connection connects on its first command.
        return self._pool.connection_class(**self._pool.connection_kwargs)

    async def _release(self, conn: AbstractConnection) -> None:
        if len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            await conn.disconnect(nowait=True)

    async def close(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)
