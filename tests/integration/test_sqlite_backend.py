"""What is particular to the sqlite backend: the file, its schema, its locks and its thread.

The semantics every backend shares are in ``tests/conformance``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from workhorse import codec
from workhorse.backends import create_backend
from workhorse.backends.base import EnqueueOutcome, NewJob, State
from workhorse.backends.sqlite import SqliteBackend, schema
from workhorse.errors import ConfigurationError, StoreError
from workhorse.job import new_job_id

#: Bound on any single wait in these tests.
PROMPT = 10.0


def new_job(name: str = "task", queue: str = "default") -> NewJob:
    return NewJob(id=new_job_id(), name=name, queue=queue, payload=codec.encode({}),
                  headers={}, priority=0, timeout=None)


def url_of(path: Path) -> str:
    # An absolute path after "sqlite:///" gives the four slashes of an absolute file URL.
    return "sqlite:///" + str(path)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
async def backend(db_path: Path) -> AsyncIterator[SqliteBackend]:
    store = SqliteBackend(url_of(db_path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to the file, as another process would have."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def versions(path: Path) -> list[tuple[int, str, float]]:
    with raw(path) as conn:
        return conn.execute(
            "SELECT version, name, applied_at FROM workhorse_schema ORDER BY version"
        ).fetchall()


# -- the file ----------------------------------------------------------------------------


async def test_the_file_is_in_wal_mode_so_reads_go_on_beside_a_writer(backend, db_path):
    [done] = await backend.enqueue([new_job()])
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        record = await asyncio.wait_for(backend.get(done.id), PROMPT)
        conn.execute("ROLLBACK")
    assert record is not None and record.state is State.READY


@pytest.mark.parametrize("relative", ["jobs.db", "data/jobs.db", "my%20jobs.db"])
async def test_a_relative_url_names_a_file_in_the_current_directory(
    tmp_path, monkeypatch, relative
):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    store = create_backend("sqlite:///" + relative)
    assert isinstance(store, SqliteBackend)
    expected = tmp_path / relative.replace("%20", " ")
    assert store.path == str(expected)
    await store.open()
    await store.enqueue([new_job()])
    await store.close()
    assert expected.is_file()


async def test_an_absolute_url_names_that_file(tmp_path):
    path = tmp_path / "absolute.db"
    store = create_backend(url_of(path))
    assert url_of(path).startswith("sqlite:////")
    assert isinstance(store, SqliteBackend) and store.path == str(path)
    await store.open()
    await store.close()
    assert path.is_file()


@pytest.mark.parametrize("url", [
    "sqlite://", "sqlite:///", "sqlite://host/jobs.db", "sqlite:///:memory:",
    "sqlite:///jobs.db?mode=ro",
])
def test_a_url_without_a_usable_path_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError, match=r"(?i)sqlite"):
        create_backend(url)


async def test_a_file_in_a_missing_folder_fails_to_open_with_a_store_error(tmp_path):
    store = SqliteBackend(url_of(tmp_path / "missing" / "jobs.db"))
    with pytest.raises(StoreError, match="cannot open"):
        await store.open()
    await store.close()


# -- the schema --------------------------------------------------------------------------


async def test_migrations_are_recorded_and_not_applied_again_on_reopening(backend, db_path):
    first = versions(db_path)
    assert [(v, name) for v, name, _ in first] == \
        [(m.version, m.name) for m in schema.bundled_migrations()]
    [done] = await backend.enqueue([new_job()])

    again = SqliteBackend(url_of(db_path))
    await again.open()
    try:
        assert await again.get(done.id) is not None
    finally:
        await again.close()
    assert versions(db_path) == first


async def test_several_instances_opening_a_new_file_at_once_migrate_it_once(db_path):
    stores = [SqliteBackend(url_of(db_path)) for _ in range(4)]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.open() for s in stores)), PROMPT)
    finally:
        for store in stores:
            await store.close()
    assert [v for v, _, _ in versions(db_path)] == \
        [m.version for m in schema.bundled_migrations()]


def ship_with(monkeypatch: pytest.MonkeyPatch, extra: schema.Migration) -> None:
    """Make the backend see ``extra`` as if a later release shipped it."""
    shipped = [*schema.bundled_migrations(), extra]
    monkeypatch.setattr(schema, "bundled_migrations", lambda: shipped)


async def test_a_file_of_an_older_schema_version_is_migrated(backend, db_path, monkeypatch):
    [done] = await backend.enqueue([new_job()])
    await backend.close()
    latest = max(m.version for m in schema.bundled_migrations())
    newer = schema.Migration(latest + 1, "notes", (
        "-- a later release adds a column and an index\n"
        "ALTER TABLE workhorse_jobs ADD COLUMN note TEXT;\n"
        "CREATE INDEX workhorse_jobs_note\n    ON workhorse_jobs (note);\n"
    ))
    ship_with(monkeypatch, newer)

    upgraded = SqliteBackend(url_of(db_path))
    await upgraded.open()
    try:
        record = await upgraded.get(done.id)
    finally:
        await upgraded.close()
    assert record is not None and record.state is State.READY
    assert [v for v, _, _ in versions(db_path)][-2:] == [latest, latest + 1]
    with raw(db_path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(workhorse_jobs)")}
    assert "note" in columns


async def test_a_failing_migration_is_rolled_back_whole(backend, db_path, monkeypatch):
    await backend.close()
    before = versions(db_path)
    latest = before[-1][0]
    broken = schema.Migration(latest + 1, "broken", (
        "CREATE TABLE workhorse_extra (x INTEGER);\n"
        "INSERT INTO no_such_table VALUES (1);\n"
    ))
    ship_with(monkeypatch, broken)

    failing = SqliteBackend(url_of(db_path))
    with pytest.raises(StoreError, match="no_such_table"):
        await failing.open()
    await failing.close()
    assert versions(db_path) == before
    with raw(db_path) as conn:
        assert conn.execute(
            "SELECT name FROM sqlite_master WHERE name = 'workhorse_extra'").fetchone() is None


async def test_a_file_written_by_a_newer_workhorse_is_refused(backend, db_path):
    await backend.close()
    with raw(db_path) as conn:
        conn.execute("INSERT INTO workhorse_schema VALUES (9999, 'future', 0)")
    newer = SqliteBackend(url_of(db_path))
    with pytest.raises(StoreError, match="upgrade workhorse"):
        await newer.open()
    await newer.close()


async def test_a_database_of_another_application_gets_the_tables_beside_its_own(db_path):
    with raw(db_path) as conn:
        conn.execute("CREATE TABLE app_users (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("INSERT INTO app_users (email) VALUES ('a@b.c')")
    store = SqliteBackend(url_of(db_path))
    await store.open()
    await store.close()
    with raw(db_path) as conn:
        assert conn.execute("SELECT email FROM app_users").fetchall() == [("a@b.c",)]
    assert versions(db_path)


# -- several processes and connections ---------------------------------------------------

CLAIMER = """
import asyncio, json, sys
from workhorse.backends.sqlite import SqliteBackend

async def main(url, worker):
    store = SqliteBackend(url)
    await store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    claimed = []
    while batch := await store.claim(worker, ["default"], 3, 60.0):
        claimed += [record.id for record in batch]
    await store.close()
    print(json.dumps(claimed), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_two_processes_claiming_at_once_never_get_the_same_job(backend, db_path):
    results = await backend.enqueue([new_job() for _ in range(300)])
    everything = {done.id for done in results}
    claimers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLAIMER, url_of(db_path), f"worker-{n}",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        for n in (1, 2)
    ]
    try:
        for claimer in claimers:  # both have opened the file before either claims
            assert claimer.stdout is not None
            assert await asyncio.wait_for(claimer.stdout.readline(), PROMPT) == b"ready\n"
        outputs = await asyncio.wait_for(
            asyncio.gather(*(claimer.communicate(b"go\n") for claimer in claimers)), 60)
    finally:
        for claimer in claimers:
            if claimer.returncode is None:
                claimer.kill()
                await claimer.wait()
    assert [claimer.returncode for claimer in claimers] == [0, 0]
    first, second = (json.loads(stdout) for stdout, _ in outputs)
    assert len(first) == len(set(first)) and len(second) == len(set(second))
    assert set(first) & set(second) == set()
    assert set(first) | set(second) == everything
    running = await backend.list_jobs(state=State.RUNNING, limit=1000)
    assert len(running) == 300 and {r.attempt for r in running} == {1}


async def test_a_locked_file_is_tried_again_until_the_lock_is_released(db_path):
    # SQLite's own busy wait is shorter than the lock is held: the retry loop must carry it.
    store = SqliteBackend(url_of(db_path), busy_timeout=0.01, busy_retry_for=PROMPT)
    await store.open()
    try:
        with raw(db_path) as other:
            other.execute("BEGIN IMMEDIATE")
            asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
            [done] = await asyncio.wait_for(store.enqueue([new_job()]), PROMPT)
            assert not other.in_transaction  # the enqueue ended after the lock did
        assert done.outcome is EnqueueOutcome.CREATED
        assert await store.get(done.id) is not None
    finally:
        await store.close()


async def test_a_file_locked_for_too_long_fails_with_a_store_error(db_path):
    store = SqliteBackend(url_of(db_path), busy_timeout=0.01, busy_retry_for=0.2)
    await store.open()
    job = new_job()
    try:
        with raw(db_path) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match="locked"):
                await asyncio.wait_for(store.enqueue([job]), PROMPT)
            other.execute("ROLLBACK")
        assert await store.get(job.id) is None
    finally:
        await store.close()


async def test_wait_for_work_wakes_when_another_connection_commits(backend, db_path):
    elsewhere = SqliteBackend(url_of(db_path))
    waiter = asyncio.create_task(backend.wait_for_work(["default"], 60.0))
    try:
        # Commit until the waiter notices: a commit before its first look sets its baseline.
        async with asyncio.timeout(PROMPT):
            while not waiter.done():
                await elsewhere.enqueue([new_job()])
                await asyncio.wait({waiter}, timeout=0.2)
    finally:
        waiter.cancel()
        await elsewhere.close()
    assert waiter.done() and not waiter.cancelled()


async def test_wait_for_work_sleeps_through_commits_that_bring_its_queues_nothing(
    backend, db_path
):
    elsewhere = SqliteBackend(url_of(db_path))
    await backend.pause("paused")
    waiter = asyncio.create_task(backend.wait_for_work(["quiet", "paused"], 60.0))
    try:
        for queue in ("busy", "paused", "busy"):
            await elsewhere.enqueue([new_job(queue=queue)])
            done, _ = await asyncio.wait({waiter}, timeout=0.2)
            assert not done, f"woke for a job in {queue!r}"
        await elsewhere.enqueue([new_job(queue="quiet")])
        await asyncio.wait_for(waiter, PROMPT)
    finally:
        waiter.cancel()
        await elsewhere.close()


async def test_wait_finished_sees_a_job_finished_by_another_connection(backend, db_path):
    elsewhere = SqliteBackend(url_of(db_path))
    try:
        [done] = await backend.enqueue([new_job()])
        waiter = asyncio.create_task(backend.wait_finished(done.id, 60.0))
        [job] = await elsewhere.claim("worker-1", ["default"], 1, 60.0)
        assert await elsewhere.ack(job.id, job.token, state=State.SUCCEEDED, status=200)
        record = await asyncio.wait_for(waiter, PROMPT)
    finally:
        await elsewhere.close()
    assert record is not None and record.state is State.SUCCEEDED


# -- the database thread -----------------------------------------------------------------


def sqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("workhorse-sqlite")}


async def test_close_leaves_no_thread_and_open_and_close_are_idempotent(db_path):
    before = sqlite_threads()
    store = SqliteBackend(url_of(db_path))
    await store.open()
    await store.open()
    assert len(sqlite_threads() - before) == 1
    await store.close()
    await store.close()
    assert sqlite_threads() - before == set()


async def test_a_verb_before_open_opens_and_one_after_close_reopens(db_path):
    before = sqlite_threads()
    store = SqliteBackend(url_of(db_path))
    [done] = await store.enqueue([new_job()])
    await store.close()
    assert await store.get(done.id) is not None
    await store.close()
    assert sqlite_threads() - before == set()


async def test_closing_ends_waits_without_opening_the_store_again(db_path):
    before = sqlite_threads()
    store = SqliteBackend(url_of(db_path))
    [done] = await store.enqueue([new_job()])
    for_work = asyncio.create_task(store.wait_for_work(["default"], 60.0))
    for_result = asyncio.create_task(store.wait_finished(done.id, 60.0))
    waits = {for_work, for_result}
    finished, _ = await asyncio.wait(waits, timeout=0.2)
    assert not finished
    await store.close()
    await asyncio.wait_for(asyncio.wait(waits), PROMPT)
    assert for_work.result() == []
    with pytest.raises(StoreError, match="closed"):
        for_result.result()
    assert sqlite_threads() - before == set()


async def test_one_instance_serves_several_event_loops(backend):
    [done] = await backend.enqueue([new_job()])
    waiter = asyncio.create_task(backend.wait_finished(done.id, 60.0))

    def from_another_loop() -> bool:
        async def finish() -> bool:
            [job] = await backend.claim("worker-1", ["default"], 1, 60.0)
            return await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200)

        return asyncio.run(finish())

    assert await asyncio.wait_for(asyncio.to_thread(from_another_loop), PROMPT)
    record = await asyncio.wait_for(waiter, PROMPT)
    assert record is not None and record.state is State.SUCCEEDED
