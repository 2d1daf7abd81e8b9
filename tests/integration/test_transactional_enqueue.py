"""Transactional enqueue (the outbox pattern): ``app.enqueue(..., connection=conn)`` writes
the job in the caller's transaction, so it runs if the caller commits and never existed if
the caller rolls back.

Each test runs on PostgreSQL and on SQLite. The producing App and the worker's App are two
instances, as two processes would be: the idle worker learns of a commit from the store
(NOTIFY, or SQLite's data_version), never from the producer's memory.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import workhorse as wh
from workhorse.errors import ConfigurationError, JobNotFound, QueueFull, StoreError

SERVER = os.environ.get("WORKHORSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: Far below the worker's poll interval below: a job run within it was noticed, not polled.
PROMPT = 10.0
IDLE_POLL = 60.0


class Side:
    """One store, seen from the caller's own connections: begin, write, commit, roll back."""

    url: str
    #: The business table of the outbox example.
    orders: str

    async def connect(self, *, autocommit: bool = False) -> Any:
        raise NotImplementedError

    async def execute(self, conn: Any, query: str, *params: Any) -> None:
        raise NotImplementedError

    async def commit(self, conn: Any) -> None:
        raise NotImplementedError

    async def rollback(self, conn: Any) -> None:
        raise NotImplementedError

    async def close(self, conn: Any) -> None:
        raise NotImplementedError

    async def order_ids(self) -> list[int]:
        """The orders committed, read on a connection of their own."""
        conn = await self.connect()
        try:
            return await self._ids(conn)
        finally:
            await self.close(conn)

    async def _ids(self, conn: Any) -> list[int]:
        raise NotImplementedError


class PostgresSide(Side):
    def __init__(self) -> None:
        self.schema = f"whtest_{uuid.uuid4().hex[:12]}"
        self.url = f"{SERVER}?schema={self.schema}"
        self.orders = f'"{self.schema}".orders'

    async def connect(self, *, autocommit: bool = False) -> Any:
        return await psycopg.AsyncConnection.connect(SERVER, autocommit=autocommit)

    async def execute(self, conn: Any, query: str, *params: Any) -> None:
        await conn.execute(query, params or None)

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    async def close(self, conn: Any) -> None:
        await conn.close()

    async def _ids(self, conn: Any) -> list[int]:
        cursor = await conn.execute(f"SELECT id FROM {self.orders} ORDER BY id")
        return [order_id for (order_id,) in await cursor.fetchall()]

    async def drop(self) -> None:
        conn = await self.connect(autocommit=True)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()


class SqliteSide(Side):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = "sqlite:///" + str(path)
        self.orders = "orders"

    async def connect(self, *, autocommit: bool = False) -> Any:
        # The sqlite3 module's default: a transaction begins at the first INSERT.
        return sqlite3.connect(self.path, isolation_level=None if autocommit else "")

    async def execute(self, conn: Any, query: str, *params: Any) -> None:
        conn.execute(query, params)

    async def commit(self, conn: Any) -> None:
        conn.commit()

    async def rollback(self, conn: Any) -> None:
        conn.rollback()

    async def close(self, conn: Any) -> None:
        conn.close()

    async def _ids(self, conn: Any) -> list[int]:
        rows = conn.execute(f"SELECT id FROM {self.orders} ORDER BY id")
        return [order_id for (order_id,) in rows]


@pytest.fixture(params=["postgresql", "sqlite"])
async def side(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Side]:
    store: Side = PostgresSide() if request.param == "postgresql" else SqliteSide(
        tmp_path / "outbox.db")
    try:
        yield store
    finally:
        if isinstance(store, PostgresSide):
            await store.drop()


def shipping_app(url: str, shipped: list[Any]) -> wh.App:
    app = wh.App(url)

    @app.handler("ship")
    async def ship(job: wh.Job[Any]) -> Any:
        shipped.append(job.args["order"])
        return job.args["order"]

    return app


@pytest.fixture
async def apps(side: Side) -> AsyncIterator[tuple[wh.App, wh.App, list[Any]]]:
    """The producer's App, the worker's App (on a running, idle Worker) and what it shipped."""
    shipped: list[Any] = []
    producer = shipping_app(side.url, shipped)
    consumer = shipping_app(side.url, shipped)
    await producer.backend()  # creates the schema, beside which the orders table goes
    conn = await side.connect(autocommit=True)
    await side.execute(conn, f"CREATE TABLE {side.orders} (id integer PRIMARY KEY, item text)")
    await side.close(conn)
    worker = wh.Worker(consumer, concurrency=2, poll_interval=IDLE_POLL, heartbeat=0.5,
                       prune_interval=0)
    await worker.start()
    try:
        yield producer, consumer, shipped
    finally:
        await worker.stop(timeout=5)
        await consumer.close()
        await producer.close()


async def test_a_committed_enqueue_runs_on_a_worker_of_another_app(side, apps):
    producer, consumer, shipped = apps
    conn = await side.connect()
    try:
        ref = await producer.enqueue("ship", {"order": 1}, connection=conn)
        # Not committed: no other connection sees the job yet.
        with pytest.raises(JobNotFound):
            await consumer.ref(ref.id).status()
        await side.commit(conn)
    finally:
        await side.close(conn)
    assert await ref.result(timeout=PROMPT) == 1
    assert shipped == [1]


async def test_a_rolled_back_enqueue_never_existed(side, apps):
    producer, consumer, shipped = apps
    conn = await side.connect()
    try:
        refs = await producer.enqueue_many(
            [wh.Job("ship", args={"order": n}) for n in range(3)], connection=conn)
        await side.rollback(conn)
    finally:
        await side.close(conn)
    for ref in refs:
        with pytest.raises(JobNotFound):
            await consumer.ref(ref.id).status()
    assert await (await consumer.backend()).list_jobs() == []
    # A later job runs alone: the worker is alive and never saw the rolled-back ones.
    later = await producer.enqueue("ship", {"order": 9})
    assert await later.result(timeout=PROMPT) == 9
    assert shipped == [9]


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_the_outbox_a_business_row_and_its_job_are_written_together(side, apps, outcome):
    producer, consumer, shipped = apps
    conn = await side.connect()
    try:
        await side.execute(conn, f"INSERT INTO {side.orders} (id, item) VALUES (%s, %s)"
                           .replace("%s", "?" if isinstance(side, SqliteSide) else "%s"),
                           42, "book")
        ref = await producer.enqueue("ship", {"order": 42}, connection=conn)
        if outcome == "commit":
            await side.commit(conn)
        else:
            await side.rollback(conn)
    finally:
        await side.close(conn)

    if outcome == "commit":
        assert await ref.result(timeout=PROMPT) == 42
        assert await side.order_ids() == [42]
        assert shipped == [42]
    else:
        assert await side.order_ids() == []
        with pytest.raises(JobNotFound):
            await consumer.ref(ref.id).status()


async def test_a_failed_enqueue_leaves_the_callers_transaction_usable(side, apps):
    producer, _, _ = apps
    producer.queue("bounded", max_size=1)
    first = await producer.enqueue("ship", {"order": 0}, queue="bounded", delay=3600)
    mark = "?" if isinstance(side, SqliteSide) else "%s"
    conn = await side.connect()
    try:
        await side.execute(conn, f"INSERT INTO {side.orders} (id) VALUES ({mark})", 1)
        with pytest.raises(QueueFull):
            await producer.enqueue("ship", {"order": 1}, queue="bounded", connection=conn)
        await side.execute(conn, f"INSERT INTO {side.orders} (id) VALUES ({mark})", 2)
        await side.commit(conn)
    finally:
        await side.close(conn)
    assert await side.order_ids() == [1, 2]
    jobs = await (await producer.backend()).list_jobs(queue="bounded")
    assert [j.id for j in jobs] == [first.id]


async def test_wait_cannot_be_combined_with_a_connection(side, apps):
    producer, _, _ = apps
    conn = await side.connect()
    try:
        with pytest.raises(ConfigurationError, match="wait="):
            await producer.enqueue("ship", {"order": 1}, wait=1.0, connection=conn)
    finally:
        await side.close(conn)


# -- what is particular to each store --------------------------------------------------------


async def test_postgres_an_autocommit_connection_outside_a_transaction_commits_at_once():
    side = PostgresSide()
    app = wh.App(side.url)
    try:
        conn = await side.connect(autocommit=True)
        async with conn:
            ref = await app.enqueue("ship", {"order": 1}, connection=conn)
            assert await wh.App(side.url).ref(ref.id).status() is wh.State.READY
            async with conn.transaction():  # a transaction block: the savepoint nests in it
                dropped = await app.enqueue("ship", {"order": 2}, connection=conn)
                raise psycopg.Rollback()
        with pytest.raises(JobNotFound):
            await app.ref(dropped.id).status()
    finally:
        await app.close()
        await side.drop()


async def test_postgres_rejects_sync_foreign_and_failed_connections():
    side = PostgresSide()
    app = wh.App(side.url)
    try:
        with psycopg.connect(SERVER) as sync_conn, \
                pytest.raises(ConfigurationError, match="AsyncConnection"):
            await app.enqueue("ship", connection=sync_conn)
        with pytest.raises(ConfigurationError, match="AsyncConnection"):
            await app.enqueue("ship", connection=object())
        conn = await side.connect()
        async with conn:
            with pytest.raises(psycopg.errors.UndefinedColumn):
                await conn.execute("SELECT no_such_column")
            with pytest.raises(StoreError, match="roll it back"):
                await app.enqueue("ship", connection=conn)
    finally:
        await app.close()
        await side.drop()


async def test_sqlite_a_connection_to_another_file_is_refused(tmp_path):
    app = wh.App("sqlite:///" + str(tmp_path / "jobs.db"))
    try:
        with sqlite3.connect(tmp_path / "other.db") as other, \
                pytest.raises(ConfigurationError, match=r"other\.db"):
            await app.enqueue("ship", connection=other)
    finally:
        await app.close()


async def test_sqlite_explicit_transactions_in_autocommit_mode(tmp_path):
    path = tmp_path / "jobs.db"
    app = wh.App("sqlite:///" + str(path))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        dropped = await app.enqueue("ship", {"order": 1}, connection=conn)
        conn.execute("ROLLBACK")
        kept = await app.enqueue("ship", {"order": 2}, connection=conn)  # commits alone
        with pytest.raises(JobNotFound):
            await app.ref(dropped.id).status()
        assert await app.ref(kept.id).status() is wh.State.READY
    finally:
        conn.close()
        await app.close()


async def test_the_memory_store_has_no_transactions_to_join():
    app = wh.App("memory://")
    with pytest.raises(ConfigurationError, match="memory"):
        await app.enqueue("ship", connection=object())
    assert await (await app.backend()).list_jobs() == []
