"""A PostgreSQL table source: rows claimed with FOR UPDATE SKIP LOCKED under a lease.

How each settle maps onto the row (each one UPDATE, fenced by the delivery count the claim
set, so a consumer whose lease ran out and whose row was claimed again changes nothing):

- claim: ``deliveries + 1`` and ``locked_until = now() + lease`` on up to ``prefetch`` rows
  that are ready and not leased; a dead consumer's rows come back once their lease ends.
- ``ack``: ``status = 'done'`` (and ``done_column = now()``); the row stays, for the record.
- ``nack(delay)``: ``locked_until = now() + delay``: claimable again after the delay.
- ``dead_letter(reason)``: ``status = 'dead'`` and ``error = reason``; True. Without a status
  column (an outbox table) it returns False, and the runtime keeps a workhorse dead job.

Leases of rows in flight are renewed every ``lease / 3`` seconds. Times are the database's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from workhorse.backoff import exponential
from workhorse.sources.base import Message, SourceClosed
from workhorse.sources.common import InFlight, SettleOnce, require, retrying

log = logging.getLogger("workhorse.source")
T = TypeVar("T")

READY, DONE, DEAD = "ready", "done", "dead"


def _psycopg() -> Any:
    """The psycopg package, imported on first use (an optional dependency)."""
    return require("psycopg", "psycopg.sql", "psycopg.types.json",
                   hint="PostgresTableSource needs psycopg: install workhorse[postgres]")


@dataclasses.dataclass(eq=False)
class PostgresRowMessage(SettleOnce):
    """One claim of one row."""

    source: PostgresTableSource
    key: Any
    body: Any
    headers: Mapping[str, str]
    deliveries: int

    @property
    def id(self) -> str:
        return str(self.key)

    def _settle(self) -> None:
        self._settle_once(self.id)
        self.source._in_flight.settled(self.id)

    async def ack(self) -> None:
        """Mark the row done."""
        self._settle()
        await self.source._update(self, "ack")

    async def nack(self, delay: float = 0.0) -> None:
        """Make the row claimable again ``delay`` seconds from now."""
        self._settle()
        await self.source._update(self, "nack", delay)

    async def dead_letter(self, reason: str) -> bool:
        """Mark the row dead with ``reason``; False (nothing changed) without a status column."""
        if self.source.status_column is None:
            return False
        self._settle()
        await self.source._update(self, "dead", reason)
        return True


class PostgresTableSource:
    """Rows of the table ``table`` (``"name"`` or ``"schema.name"``) as messages.

        await create_table(url, "inbox")                   # or point it at your own table
        source = PostgresTableSource(url, "inbox", lease=30)
        await source.add({"order": 7})                      # INSERT; or insert rows yourself
        worker.consume(source, "handle_inbox", concurrency=4)

    The default columns are those ``create_table`` makes; each is a parameter, so an
    existing table works as it is:

    - ``id_column`` (``id``): a unique key; rows are claimed in its order.
    - ``body_column`` (``body``): the payload; jsonb arrives decoded, bytea as bytes.
    - ``headers_column`` (``headers``, or None): a jsonb object of string metadata.
    - ``deliveries_column`` (``deliveries``): an integer, 0 when the row is inserted.
    - ``lease_column`` (``locked_until``): a nullable timestamptz, NULL when inserted.
    - ``status_column`` (``status``, or None): text, ``'ready'`` when inserted; the source
      sets ``'done'`` or ``'dead'``. None: only ``done_column`` says a row is done, and
      dead letters go to workhorse dead jobs (``dead_letter`` returns False).
    - ``done_column`` (``done_at``, or None): a nullable timestamptz set to now() on ack.
    - ``error_column`` (``error``, or None): text, the reason of a dead row.

    A row is ready while its status is ``'ready'`` (or, without a status column, while its
    ``done_column`` is NULL) and its lease is NULL or past. For an outbox whose rows are
    marked published: ``PostgresTableSource(url, "outbox", status_column=None,
    done_column="published_at", error_column=None)``.

    ``poll_interval`` bounds how long a new row waits when the table was empty. With
    ``notify_channel``, the source also LISTENs on that channel and looks for rows at once on
    each notification (``create_table(..., notify_channel=...)`` adds a trigger that sends
    one per INSERT statement; ``add`` sends one itself); polling remains the fallback for a
    missed one. On a lost
    connection the source reconnects with capped exponential backoff, logging each attempt;
    settle calls retry the same way until the source is closed, when they raise
    SourceClosed (the row comes back when its lease ends: not lost).
    """

    def __init__(self, url: str, table: str, *, id_column: str = "id",
                 body_column: str = "body", headers_column: str | None = "headers",
                 deliveries_column: str = "deliveries", lease_column: str = "locked_until",
                 status_column: str | None = "status", done_column: str | None = "done_at",
                 error_column: str | None = "error", lease: float = 30.0,
                 poll_interval: float = 0.5, reconnect_cap: float = 5.0,
                 notify_channel: str | None = None) -> None:
        if status_column is None and done_column is None:
            raise ValueError("a status_column or a done_column is needed to mark rows done")
        if lease <= 0 or poll_interval <= 0:
            raise ValueError("lease and poll_interval must be positive")
        self.url = url
        self.table = table
        self.id_column = id_column
        self.body_column = body_column
        self.headers_column = headers_column
        self.deliveries_column = deliveries_column
        self.lease_column = lease_column
        self.status_column = status_column
        self.done_column = done_column
        self.error_column = error_column
        self.lease = lease
        self.poll_interval = poll_interval
        self.notify_channel = notify_channel
        self._backoff = exponential(base=0.05, cap=reconnect_cap)
        self._listener: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._in_flight: InFlight[PostgresRowMessage] = InFlight(
            self.name, self._renew, lease / 3, log)
        self._closed = False

    @property
    def name(self) -> str:
        return f"postgres-table:{self.table}"

    # -- SQL ---------------------------------------------------------------------------------

    def _ident(self, column: str) -> Any:
        return _psycopg().sql.Identifier(column)

    def _table(self) -> Any:
        return _psycopg().sql.Identifier(*self.table.split("."))

    def _ready(self) -> Any:
        """The condition of a row that is not finished (whether leased or not)."""
        sql = _psycopg().sql
        if self.status_column is not None:
            return sql.SQL("{} = {}").format(self._ident(self.status_column), sql.Literal(READY))
        assert self.done_column is not None
        return sql.SQL("{} IS NULL").format(self._ident(self.done_column))

    def _claim_query(self) -> Any:
        sql = _psycopg().sql
        headers = (self._ident(self.headers_column) if self.headers_column
                   else sql.SQL("NULL"))
        return sql.SQL(
            "WITH claimed AS ("
            " UPDATE {t} SET {lease} = now() + make_interval(secs => %(lease)s),"
            " {dl} = {dl} + 1"
            " WHERE {id} IN (SELECT {id} FROM {t} WHERE {ready}"
            "  AND ({lease} IS NULL OR {lease} <= now())"
            "  ORDER BY {id} LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " RETURNING {id}, {body}, {headers}, {dl})"
            " SELECT * FROM claimed ORDER BY 1"
        ).format(t=self._table(), lease=self._ident(self.lease_column),
                 dl=self._ident(self.deliveries_column), id=self._ident(self.id_column),
                 ready=self._ready(), body=self._ident(self.body_column), headers=headers)

    def _settle_query(self, how: str) -> Any:
        sql = _psycopg().sql
        sets = [sql.SQL("{} = NULL").format(self._ident(self.lease_column))]
        if how == "nack":
            sets = [sql.SQL("{} = now() + make_interval(secs => %(arg)s)").format(
                self._ident(self.lease_column))]
        elif how == "ack":
            if self.status_column:
                sets.append(sql.SQL("{} = {}").format(self._ident(self.status_column),
                                                      sql.Literal(DONE)))
            if self.done_column:
                sets.append(sql.SQL("{} = now()").format(self._ident(self.done_column)))
        else:
            assert self.status_column is not None
            sets.append(sql.SQL("{} = {}").format(self._ident(self.status_column),
                                                  sql.Literal(DEAD)))
            if self.error_column:
                sets.append(sql.SQL("{} = %(arg)s").format(self._ident(self.error_column)))
        return sql.SQL("UPDATE {t} SET {sets} WHERE {id} = %(key)s AND {dl} = %(dl)s"
                       " AND {ready}").format(
            t=self._table(), sets=sql.SQL(", ").join(sets), id=self._ident(self.id_column),
            dl=self._ident(self.deliveries_column), ready=self._ready())

    # -- producing ---------------------------------------------------------------------------

    async def add(self, body: Any, headers: Mapping[str, str] | None = None) -> str:
        """INSERT a row holding ``body`` (as JSON) and ``headers``; its key, as text."""
        psycopg = _psycopg()
        columns = [self._ident(self.body_column)]
        values: list[Any] = [psycopg.types.json.Jsonb(body)]
        if self.headers_column:
            columns.append(self._ident(self.headers_column))
            values.append(psycopg.types.json.Jsonb(dict(headers or {})))
        query = psycopg.sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
            self._table(), psycopg.sql.SQL(", ").join(columns),
            psycopg.sql.SQL(", ").join([psycopg.sql.Placeholder()] * len(values)),
            self._ident(self.id_column))

        async def insert() -> Any:
            conn = await self._connection()
            cursor = await conn.execute(query, values)
            key = (await cursor.fetchone())[0]
            if self.notify_channel is not None:
                await conn.execute("SELECT pg_notify(%s, '')", (self.notify_channel,))
            return key
        return str(await self._retrying("add", insert))

    # -- consuming ---------------------------------------------------------------------------

    def messages(self, prefetch: int) -> AsyncIterator[Message]:
        """Claimed rows, oldest key first; at most ``prefetch`` unsettled at once."""
        if self.notify_channel is not None and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(self.notify_channel), name=f"{self.name}:listen")
        return self._in_flight.deliver(prefetch, self._claim_retrying,
                                       closed=lambda: self._closed, give_back=self._give_back,
                                       poll_interval=self.poll_interval)

    async def _claim_retrying(self, limit: int) -> list[PostgresRowMessage]:
        return await self._retrying("claim", functools.partial(self._claim, limit))

    @staticmethod
    async def _give_back(message: PostgresRowMessage) -> None:
        """A row claimed but never handed out: claimable again at once."""
        await message.nack(0.0)

    async def _claim(self, limit: int) -> list[PostgresRowMessage]:
        conn = await self._connection()
        cursor = await conn.execute(self._claim_query(), {"lease": self.lease, "limit": limit})
        messages = []
        for key, body, headers, deliveries in await cursor.fetchall():
            if isinstance(body, memoryview):
                body = bytes(body)
            heads = ({str(k): str(v) for k, v in headers.items()}
                     if isinstance(headers, dict) else {})
            messages.append(PostgresRowMessage(self, key, body, heads, int(deliveries)))
        return messages

    async def _renew(self, messages: list[PostgresRowMessage]) -> None:
        """Extend the leases of the rows in flight, so a slow handler keeps its rows."""
        sql = _psycopg().sql
        query = sql.SQL("UPDATE {t} SET {lease} = now() + make_interval(secs => %s)"
                        " WHERE {id} = ANY(%s) AND {ready}").format(
            t=self._table(), lease=self._ident(self.lease_column),
            id=self._ident(self.id_column), ready=self._ready())
        keys = [message.key for message in messages]
        await (await self._connection()).execute(query, (self.lease, keys))

    async def _update(self, message: PostgresRowMessage, how: str, arg: Any = None) -> None:
        query = self._settle_query(how)
        params = {"key": message.key, "dl": message.deliveries, "arg": arg}

        async def update() -> int:
            cursor = await (await self._connection()).execute(query, params)
            return int(cursor.rowcount)
        if not await self._retrying(how, update):
            raise SourceClosed(f"row {message.id}: its lease ended and it was claimed again")

    # -- connection --------------------------------------------------------------------------

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = await _psycopg().AsyncConnection.connect(self.url, autocommit=True)
        return self._conn

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again with backoff while the database is unreachable; SourceClosed
        once the source is closed."""
        psycopg = _psycopg()
        return await retrying(
            log, self.name, what, call, backoff=self._backoff, closed=lambda: self._closed,
            errors=(psycopg.OperationalError, psycopg.InterfaceError, OSError),
            on_error=self._drop_connection)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        """Stop delivering and close the connection."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait({listener})
        await self._in_flight.close()
        await self._drop_connection()

    async def _listen(self, channel: str) -> None:
        """Wake the fetch loop on each notification of ``channel``, on a connection of its
        own, reconnecting with backoff; a notification missed meanwhile costs one poll."""
        psycopg = _psycopg()
        attempt = 0
        while not self._closed:
            try:
                async with await psycopg.AsyncConnection.connect(self.url,
                                                                 autocommit=True) as conn:
                    await conn.execute(psycopg.sql.SQL("LISTEN {}").format(
                        psycopg.sql.Identifier(channel)))
                    attempt = 0
                    self._in_flight.wake()  # rows added while it was not listening
                    async for _ in conn.notifies():
                        self._in_flight.wake()
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                attempt += 1
                pause = self._backoff(attempt)
                log.warning("%s: listening on %s failed (%s); again in %.2fs", self.name,
                            channel, str(exc).strip(), pause)
                await asyncio.sleep(pause)


async def create_table(url_or_connection: Any, table: str, *,
                       notify_channel: str | None = None) -> None:
    """Create ``table`` (``"name"`` or ``"schema.name"``) with the columns
    ``PostgresTableSource`` uses by default, if it does not exist; ``url_or_connection`` is
    a URL or an open psycopg AsyncConnection (then used in its current transaction). With
    ``notify_channel``, a trigger NOTIFYs that channel after each INSERT statement, for a
    source created with the same ``notify_channel``."""
    psycopg = _psycopg()
    sql = psycopg.sql
    parts = table.split(".")
    index = sql.Identifier(f"{parts[-1]}_ready")
    statements = [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ("
                " id bigserial PRIMARY KEY,"
                " body jsonb NOT NULL,"
                " headers jsonb NOT NULL DEFAULT '{{}}',"
                " status text NOT NULL DEFAULT 'ready',"
                " deliveries integer NOT NULL DEFAULT 0,"
                " locked_until timestamptz,"
                " error text,"
                " created_at timestamptz NOT NULL DEFAULT now(),"
                " done_at timestamptz)").format(sql.Identifier(*parts)),
        # Only unfinished rows are looked for: a partial index stays small.
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (id) WHERE status = 'ready'").format(
            index, sql.Identifier(*parts)),
    ]
    if notify_channel is not None:
        notify = sql.Identifier(*parts[:-1], f"{parts[-1]}_notify")
        statements += [
            sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN PERFORM pg_notify({}, ''); RETURN NULL; END $$").format(
                notify, sql.Literal(notify_channel)),
            sql.SQL("CREATE OR REPLACE TRIGGER {} AFTER INSERT ON {}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION {}()").format(
                sql.Identifier(f"{parts[-1]}_notify"), sql.Identifier(*parts), notify),
        ]
    if isinstance(url_or_connection, str):
        async with await psycopg.AsyncConnection.connect(url_or_connection,
                                                         autocommit=True) as conn:
            for statement in statements:
                await conn.execute(statement)
    else:
        for statement in statements:
            await url_or_connection.execute(statement)
