"""What is particular to the postgres backend: its schema, migrations, notifications,
connections and event loops.

The semantics every backend shares are in ``tests/conformance``. Each test gets a schema of
its own (dropped afterwards) and an application_name of its own, to count its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from workhorse import codec
from workhorse.backends import create_backend
from workhorse.backends.base import EnqueueOutcome, Limits, NewJob, State
from workhorse.backends.postgres import PostgresBackend, schema
from workhorse.errors import ConfigurationError, StoreError
from workhorse.job import new_job_id

SERVER = os.environ.get("WORKHORSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: Bound on any single wait in these tests: far beyond what a prompt wake-up takes.
PROMPT = 5.0
#: A waiter's own timeout: long enough that returning early proves a wake-up.
LONG = 30.0


def new_job(name: str = "task", queue: str = "q", payload: bytes = b"{}") -> NewJob:
    return NewJob(id=new_job_id(), name=name, queue=queue, payload=payload, headers={},
                  priority=0, timeout=None)


async def raw_connection() -> psycopg.AsyncConnection[Any]:
    """A plain connection to the server, as another program would have."""
    return await psycopg.AsyncConnection.connect(SERVER, autocommit=True)


async def fetch(query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await raw_connection() as conn:
        cursor = await conn.execute(query, params or None)
        return await cursor.fetchall() if cursor.description else []


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + PROMPT
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {PROMPT} s for {what}")
        await asyncio.sleep(0.02)


class Schema:
    """A private schema and application_name: the URLs to reach them, and what they hold."""

    def __init__(self) -> None:
        self.name = f"whtest_{uuid.uuid4().hex[:12]}"
        self.app_name = f"wh_{uuid.uuid4().hex[:12]}"

    def url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in
                         {"schema": self.name, "application_name": self.app_name,
                          **params}.items())
        return f"{SERVER}?{query}"

    async def connections(self) -> int:
        """Connections the backend under test holds open (seen by the server)."""
        [(count,)] = await fetch(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", self.app_name)
        return int(count)

    async def versions(self) -> list[int]:
        rows = await fetch(f'SELECT version FROM "{self.name}".migrations ORDER BY version')
        return [version for (version,) in rows]

    async def exists(self) -> bool:
        return bool(await fetch("SELECT 1 FROM pg_namespace WHERE nspname = %s", self.name))

    async def drop(self) -> None:
        await fetch(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


@pytest.fixture
async def private() -> AsyncIterator[Schema]:
    place = Schema()
    try:
        yield place
    finally:
        await place.drop()


@pytest.fixture
async def backend(private: Schema) -> AsyncIterator[PostgresBackend]:
    store = PostgresBackend(private.url())
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def other(private: Schema, backend: PostgresBackend) -> AsyncIterator[PostgresBackend]:
    """A second instance on the same schema: its own pool and connections, as another
    process would have."""
    store = PostgresBackend(private.url())
    try:
        yield store
    finally:
        await store.close()


# -- the schema --------------------------------------------------------------------------


async def test_the_url_picks_this_backend_and_its_schema(private):
    store = create_backend(private.url() + "&sslmode=disable")
    assert isinstance(store, PostgresBackend)
    assert store.schema == private.name
    assert PostgresBackend(SERVER).schema == "workhorse"


@pytest.mark.parametrize("query", ["schema=", "schema=" + "x" * 64, "migrate=maybe"])
def test_bad_parameters_are_configuration_errors(query):
    with pytest.raises(ConfigurationError):
        PostgresBackend(f"{SERVER}?{query}")


async def test_every_table_lives_in_the_schema_of_the_url(backend, private):
    rows = await fetch("SELECT table_name FROM information_schema.tables "
                       "WHERE table_schema = %s ORDER BY 1", private.name)
    assert [name for (name,) in rows] == ["buckets", "jobs", "migrations", "paused",
                                          "result_listening", "workers"]
    [done] = await backend.enqueue([new_job()])
    assert await fetch(f'SELECT id FROM "{private.name}".jobs') == [(done.id,)]


async def test_schemas_are_isolated_from_each_other(backend):
    neighbour = Schema()
    store = PostgresBackend(neighbour.url())
    try:
        waiter = asyncio.create_task(backend.wait_for_work(["q"], LONG))
        await asyncio.sleep(0.2)
        [done] = await store.enqueue([new_job()])
        # The neighbour's notification is on its own channel.
        assert not (await asyncio.wait({waiter}, timeout=0.5))[0]
        assert await backend.get(done.id) is None
        assert await backend.claim("w", ["q"], 10, 30.0) == []
        waiter.cancel()
    finally:
        await store.close()
        await neighbour.drop()


async def test_migrations_are_recorded_and_applied_once_by_concurrent_opens(private):
    stores = [PostgresBackend(private.url()) for _ in range(6)]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.open() for s in stores)), PROMPT * 2)
        assert await private.versions() == [m.version for m in schema.bundled_migrations()]
        assert await stores[0].migrate() == 0
    finally:
        for store in stores:
            await store.close()


async def test_migrate_false_refuses_a_missing_schema_and_says_what_to_run(private):
    store = PostgresBackend(private.url(migrate="false"))
    with pytest.raises(ConfigurationError, match=r"missing.*workhorse migrate URL"):
        await store.open()
    with pytest.raises(ConfigurationError):
        await store.get("anything")  # verbs open lazily, and refuse alike
    assert not await private.exists()

    assert await store.migrate() == len(schema.bundled_migrations())
    await store.open()
    assert await store.get("anything") is None
    await store.close()


async def test_migrate_false_refuses_a_schema_behind(backend, private, monkeypatch):
    later = schema.Migration(9000, "later", "CREATE TABLE {schema}.later (n integer);")
    bundled = schema.bundled_migrations()
    monkeypatch.setattr(schema, "bundled_migrations", lambda: [*bundled, later])

    refusing = PostgresBackend(private.url(migrate="false"))
    with pytest.raises(ConfigurationError,
                       match=rf"at version {bundled[-1].version}.*workhorse migrate URL"):
        await refusing.open()
    await refusing.close()

    migrating = PostgresBackend(private.url())
    await migrating.open()  # migrate=true (the default) applies it
    await migrating.close()
    assert await private.versions() == [*(m.version for m in bundled), 9000]


async def test_a_schema_of_a_newer_workhorse_is_refused(backend, private):
    await fetch(f'INSERT INTO "{private.name}".migrations VALUES (9999, %s, 0)', "future")
    store = PostgresBackend(private.url())
    with pytest.raises(StoreError, match="upgrade workhorse"):
        await store.open()
    await store.close()


async def test_a_failing_migration_is_rolled_back_whole(backend, private, monkeypatch):
    broken = schema.Migration(9000, "broken",
                              "CREATE TABLE {schema}.half (n integer); SELECT no_such_thing;")
    bundled = schema.bundled_migrations()
    monkeypatch.setattr(schema, "bundled_migrations", lambda: [*bundled, broken])
    with pytest.raises(StoreError, match="no_such_thing"):
        await PostgresBackend(private.url()).migrate()
    assert await private.versions() == [m.version for m in bundled]
    assert not await fetch("SELECT 1 FROM information_schema.tables "
                           "WHERE table_schema = %s AND table_name = 'half'", private.name)


# -- claims across connections -------------------------------------------------------------


async def test_a_garbage_payload_row_is_claimed_and_returned_as_bytes(backend, private):
    garbage = b"\xff\x00{not json\x80"
    await fetch(
        f'INSERT INTO "{private.name}".jobs (id, name, queue, payload, headers, priority, '
        "state, run_at, enqueued_at) VALUES ('junk', 'task', 'q', %s, '{}', 0, 'ready', 0, 0)",
        garbage)
    [record] = await backend.claim("w", ["q"], 10, 30.0)
    assert (record.id, record.payload, record.state) == ("junk", garbage, State.RUNNING)
    assert isinstance(record.payload, bytes)


async def test_concurrent_claims_on_many_connections_respect_the_limits(private, backend):
    await backend.enqueue([new_job("capped") for _ in range(20)]
                          + [new_job("metered") for _ in range(20)])
    limits = {"capped": Limits(max_concurrency=3), "metered": Limits(rate=0.001, burst=4)}
    stores = [PostgresBackend(private.url()) for _ in range(8)]
    try:
        batches = await asyncio.gather(*(
            store.claim(f"w{n}", ["q"], 5, 30.0, limits)
            for n, store in enumerate(stores) for _ in range(3)))
    finally:
        for store in stores:
            await store.close()
    claimed = [r for batch in batches for r in batch]
    assert len({r.id for r in claimed}) == len(claimed)
    assert sum(r.name == "capped" for r in claimed) == 3
    assert sum(r.name == "metered" for r in claimed) == 4


async def test_a_cancelled_claim_leaves_nothing_leased(backend):
    await backend.enqueue([new_job() for _ in range(5)])
    # Cancelled before, while and after the server runs it: either nothing was leased or
    # what was leased is given back.
    for delay in (0, 0.001, 0.002, 0.005, 0.01, 0.02):
        claiming = asyncio.create_task(backend.claim("w", ["q"], 5, 30.0))
        await asyncio.sleep(delay)
        claiming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            for claimed in await claiming:  # finished before the cancel arrived
                assert await backend.release(claimed.id, claimed.token)
        jobs = await backend.list_jobs()
        assert {(j.state, j.attempt) for j in jobs} == {(State.READY, 0)}, delay


# -- waiting -----------------------------------------------------------------------------


async def test_an_idle_waiter_wakes_when_another_connection_enqueues(backend, other):
    waiter = asyncio.create_task(backend.wait_for_work(["q"], LONG))
    assert not (await asyncio.wait({waiter}, timeout=0.3))[0]
    await other.enqueue([new_job(queue="elsewhere")])
    assert not (await asyncio.wait({waiter}, timeout=0.3))[0]  # not its queue

    started = time.monotonic()
    await other.enqueue([new_job(queue="q")])
    await asyncio.wait_for(waiter, PROMPT)
    assert time.monotonic() - started < 2.0


async def test_wait_for_work_sleeps_while_ready_jobs_are_held_back_by_limits(backend):
    limits = {"capped": Limits(max_concurrency=1)}
    await backend.enqueue([new_job("capped") for _ in range(3)])
    [running] = await backend.claim("w", ["q"], 10, 30.0, limits)
    assert await backend.claim("w", ["q"], 10, 30.0, limits) == []

    waiter = asyncio.create_task(backend.wait_for_work(["q"], LONG))
    assert not (await asyncio.wait({waiter}, timeout=0.5))[0]
    assert await backend.ack(running.id, running.token, state=State.SUCCEEDED, status=200)
    await asyncio.wait_for(waiter, PROMPT)  # the slot freed
    assert len(await backend.claim("w", ["q"], 10, 30.0, limits)) == 1


async def test_wait_finished_wakes_when_another_connection_acks(backend, other):
    [done] = await backend.enqueue([new_job()])
    waiter = asyncio.create_task(backend.wait_finished(done.id, LONG))
    assert not (await asyncio.wait({waiter}, timeout=0.3))[0]

    [claimed] = await other.claim("w", ["q"], 1, 30.0)
    assert not (await asyncio.wait({waiter}, timeout=0.3))[0]
    started = time.monotonic()
    assert await other.ack(claimed.id, claimed.token, state=State.SUCCEEDED, status=200,
                           result=b'"ok"')
    record = await asyncio.wait_for(waiter, PROMPT)
    assert time.monotonic() - started < 2.0
    assert (record.state, record.result) == (State.SUCCEEDED, b'"ok"')


async def test_wait_finished_wakes_for_jobs_cancelled_in_bulk_elsewhere(backend, other):
    [done] = await backend.enqueue([new_job()])
    waiter = asyncio.create_task(backend.wait_finished(done.id, LONG))
    assert not (await asyncio.wait({waiter}, timeout=0.3))[0]
    assert await other.cancel_all(queue="q") == 1
    record = await asyncio.wait_for(waiter, PROMPT)
    assert record.state is State.CANCELLED


async def test_closing_ends_waits_in_progress(private):
    store = PostgresBackend(private.url())
    [done] = await store.enqueue([new_job()])
    work = asyncio.create_task(store.wait_for_work(["q"], LONG))
    finish = asyncio.create_task(store.wait_finished(done.id, LONG))
    await asyncio.sleep(0.3)
    await store.close()
    await asyncio.wait_for(work, PROMPT)
    with pytest.raises(StoreError, match="closed"):
        await asyncio.wait_for(finish, PROMPT)
    await store.close()


# -- connections -------------------------------------------------------------------------


async def test_an_unreachable_server_fails_promptly_with_a_store_error():
    store = PostgresBackend("postgresql://postgres@127.0.0.1:1/test?schema=nowhere")
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/test"):
        await store.open()
    assert time.monotonic() - started < 10.0
    await store.close()


async def test_a_lost_connection_is_a_store_error_and_the_next_call_reconnects(
    backend, private
):
    [done] = await backend.enqueue([new_job()])
    waiter = asyncio.create_task(backend.wait_for_work(["q"], LONG))
    await asyncio.sleep(0.2)

    await fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s", private.app_name)
    await asyncio.wait_for(waiter, PROMPT)  # the LISTEN connection went: waiters look again
    with pytest.raises(StoreError, match="PostgreSQL"):
        await backend.get(done.id)

    async def back() -> bool:
        try:
            return await backend.get(done.id) is not None
        except StoreError:
            return False

    await wait_until(back, "the pool to reconnect")
    waiter = asyncio.create_task(backend.wait_for_work(["q"], LONG))  # listens anew
    await asyncio.sleep(0.2)
    await backend.enqueue([new_job()])
    await asyncio.wait_for(waiter, PROMPT)


async def test_one_instance_serves_a_second_event_loop(backend, private):
    [done] = await backend.enqueue([new_job()])
    before = await private.connections()
    seen: list[Any] = []

    def elsewhere() -> None:
        async def use() -> None:
            [more] = await backend.enqueue([new_job()])
            seen.append(await backend.get(done.id))
            seen.append(await backend.get(more.id))
            await backend.wait_for_work(["q"], 0.05)

        asyncio.run(use())  # as App.enqueue_sync does, from a thread

    thread = threading.Thread(target=elsewhere)
    thread.start()
    await asyncio.to_thread(thread.join, PROMPT)
    assert [r.id for r in seen] == [done.id, seen[1].id]
    assert len(await backend.list_jobs()) == 2

    # The other loop's pool and LISTEN connection closed when its loop shut down.
    async def closed() -> bool:
        return await private.connections() <= before

    await wait_until(closed, "the ended loop's connections to close")


async def test_close_leaves_no_task_and_no_connection(private):
    store = PostgresBackend(private.url())
    [done] = await store.enqueue([new_job()])
    await store.wait_for_work(["q"], 0.05)
    assert await store.wait_finished(done.id, 0.05) is None
    assert await private.connections() >= 2  # a pooled one and the listener

    await store.close()
    await store.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}

    async def gone() -> bool:
        return await private.connections() == 0

    await wait_until(gone, "the connections to close")
    # A verb after close opens the store again.
    assert (await store.get(done.id)).state is State.READY
    await store.close()


async def test_headers_and_results_round_trip(backend):
    job = NewJob(id=new_job_id(), name="task", queue="q", payload=codec.encode({"a": 1}),
                 headers={"trace": "t-1", "ünï": "cødé"}, priority=3, timeout=1.5)
    [done] = await backend.enqueue([job])
    assert done.outcome is EnqueueOutcome.CREATED
    [claimed] = await backend.claim("w", ["q"], 1, 30.0)
    assert claimed.headers == job.headers
    assert await backend.ack(claimed.id, claimed.token, state=State.SUCCEEDED, status=200,
                             result=b"\x00binary\xff")
    assert (await backend.get(job.id)).result == b"\x00binary\xff"
