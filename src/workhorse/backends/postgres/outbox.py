"""Transactional enqueue: writing jobs in the caller's own transaction (the outbox pattern).

``App.enqueue(..., connection=conn)`` hands the caller's ``psycopg.AsyncConnection`` here:
the jobs are written in its transaction and never committed by us, so they exist (and
their NOTIFY wakes the workers of every process) when the caller commits, and never did if
it rolls back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from workhorse.errors import ConfigurationError, StoreError

Params = Sequence[Any] | Mapping[str, Any] | None

_SAVEPOINT = "workhorse_enqueue"


def callers_connection(connection: object) -> psycopg.AsyncConnection[Any]:
    """``connection`` if it is a psycopg async connection; else ConfigurationError."""
    if isinstance(connection, psycopg.AsyncConnection):
        return connection
    if isinstance(connection, psycopg.Connection):
        raise ConfigurationError(
            "the postgresql backend enqueues in the transaction of a psycopg.AsyncConnection; "
            "a sync psycopg.Connection cannot be used from async code"
        )
    raise ConfigurationError(
        f"connection= must be a psycopg.AsyncConnection, not {type(connection).__name__}"
    )


async def in_callers_transaction(conn: psycopg.AsyncConnection[Any], query: str,
                                 params: Params) -> list[tuple[Any, ...]]:
    """Run ``query`` in the caller's transaction on ``conn``, never committing it.

    A savepoint keeps the caller's transaction usable if the enqueue fails (QueueFull). A
    connection in autocommit mode outside a transaction block has none to join: the
    enqueue is then a transaction of its own. One not in autocommit mode and idle starts
    the caller's transaction here, as its own next statement would have.
    """
    status = conn.info.transaction_status
    if status is TransactionStatus.INERROR:
        raise StoreError("the connection's transaction has failed: roll it back first")
    # The caller's row factory may be anything; ours reads tuples.
    cursor = conn.cursor(row_factory=tuple_row)
    if status is TransactionStatus.IDLE and conn.autocommit:
        await cursor.execute(query, params)
        return await cursor.fetchall()
    await cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        await cursor.execute(query, params)
        rows = await cursor.fetchall()
    except Exception:
        with _quietly():
            await cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            await cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        raise
    await cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return rows


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Ignore a failure to undo, which must not hide the error that made us undo."""
    with contextlib.suppress(psycopg.Error):
        yield
