"""Malformed entries written straight into each store, behind workhorse's back: garbage
bytes, truncated JSON, an unknown handler and a 50 MB payload. Each must end DEAD (400)
with its reason, and the worker must live on and run the good jobs queued after them."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

import workhorse as wh
from workhorse.backends.base import NewJob

from .procs import enqueue_work, start_worker, states, wait_for
from .servers import RedisServer

pytestmark = pytest.mark.slow

POSTGRES = os.environ.get("WORKHORSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
HUGE = 50 * 1024 * 1024

#: id -> (handler name, payload, what its error must say). The huge payload is valid JSON
#: for a registered handler: only its size is wrong.
BAD: dict[str, tuple[str, bytes, str]] = {
    "bad-garbage": ("work", b"\xff\xfe\x00\x9c garbage \x00", "undecodable payload"),
    "bad-truncated": ("work", b'{"seconds": 0.0, "note": "cut sho', "undecodable payload"),
    "bad-unknown": ("no_such_handler", b"{}", "no handler registered for 'no_such_handler'"),
    "bad-huge": ("work", b'{"blob": "' + b"x" * (HUGE - 12) + b'"}', "too large"),
    "bad-headers": ("work", b"{}", "undecodable headers"),
}
#: The stored headers of "bad-headers" (PostgreSQL keeps them as jsonb: valid JSON, wrong shape).
BAD_HEADERS = {"bad-headers": b"\xff{not json"}
BAD_PG_HEADERS = {"bad-headers": "[1, 2]"}


# -- writing straight into each store ------------------------------------------------------

def plant_sqlite(url: str, template: str) -> None:
    """Copy the READY row of job ``template`` under each bad id, name and payload."""
    db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=10)
    try:
        with db:
            columns = [row[1] for row in db.execute("PRAGMA table_info(workhorse_jobs)")]
            assert {"id", "name", "payload", "seq"} <= set(columns)
            copied = [c for c in columns if c not in ("seq", "id", "name", "payload")]
            listed = ", ".join(copied)
            for job_id, (name, payload, _) in BAD.items():
                db.execute(f"INSERT INTO workhorse_jobs (id, name, payload, {listed}) "
                           f"SELECT ?, ?, ?, {listed} FROM workhorse_jobs WHERE id = ?",
                           (job_id, name, payload, template))
                if job_id in BAD_HEADERS:
                    db.execute("UPDATE workhorse_jobs SET headers = ? WHERE id = ?",
                               (BAD_HEADERS[job_id], job_id))
    finally:
        db.close()


def plant_postgres(url: str, template: str) -> None:
    schema = url.split("schema=", 1)[1].split("&", 1)[0]
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'jobs'", (schema,))]
        assert {"id", "name", "payload", "seq"} <= set(columns)
        listed = ", ".join(f'"{c}"' for c in columns if c not in ("seq", "id", "name", "payload"))
        for job_id, (name, payload, _) in BAD.items():
            conn.execute(f'INSERT INTO "{schema}".jobs (id, name, payload, {listed}) '
                         f'SELECT %s, %s, %s, {listed} FROM "{schema}".jobs WHERE id = %s',
                         (job_id, name, payload, template))
            if job_id in BAD_PG_HEADERS:
                conn.execute(f'UPDATE "{schema}".jobs SET headers = %s::jsonb WHERE id = %s',
                             (BAD_PG_HEADERS[job_id], job_id))


def plant_redis(url: str, template: str) -> None:
    """Copy the hash of job ``template`` and add each copy to its READY set, as enqueue.lua
    does (see common.lua for the layout)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        prefix = "{workhorse}:"
        fields = client.hgetall(f"{prefix}job:{template}")
        assert fields[b"state"] == b"ready"
        queue = fields[b"queue"].decode()
        for job_id, (name, payload, _) in BAD.items():
            seq = client.incr(f"{prefix}seq")
            client.hset(f"{prefix}job:{job_id}", mapping={
                **fields, b"id": job_id, b"name": name, b"payload": payload, b"seq": seq,
                b"headers": BAD_HEADERS.get(job_id, fields[b"headers"])})
            client.zadd(f"{prefix}queue:{queue}:{name}", {f"{seq:016d}{job_id}": 0})
            client.sadd(f"{prefix}names:{queue}", name)
            client.zadd(f"{prefix}jobs", {job_id: seq})
    finally:
        client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    schema = f"whbad_{uuid.uuid4().hex[:10]}"
    yield f"{POSTGRES}?schema={schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path)
    server.start()
    yield server.url
    server.stop()


def store(request: pytest.FixtureRequest, kind: str, tmp_path: Path
          ) -> tuple[str, Callable[[str, str], None]]:
    if kind == "sqlite":
        return "sqlite:///" + str(tmp_path / "bad.db"), plant_sqlite
    if kind == "redis":
        return request.getfixturevalue("redis_url"), plant_redis
    return request.getfixturevalue("postgres_url"), plant_postgres


def live(counts: Counter[wh.State]) -> int:
    return sum(n for state, n in counts.items() if state.live)


async def dead_records(url: str) -> dict[str, wh.backends.base.JobRecord]:
    app = wh.App(url)
    try:
        backend = await app.backend()
        return {job_id: record for job_id in BAD
                if (record := await backend.get(job_id)) is not None}
    finally:
        await app.close()


def check_dead(records: dict[str, wh.backends.base.JobRecord],
               bad: dict[str, tuple[str, bytes, str]] = BAD) -> None:
    assert set(records) == set(bad)
    for job_id, (_, _, reason) in bad.items():
        record = records[job_id]
        assert (job_id, record.state, record.status) == (job_id, wh.State.DEAD, 400)
        assert reason in (record.error or ""), (job_id, record.error)


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgresql"])
def test_malformed_entries_go_dead_and_the_worker_runs_the_good_jobs_after_them(
        request, kind, tmp_path):
    url, plant = store(request, kind, tmp_path)
    log = tmp_path / "attempts.log"
    [template] = asyncio.run(enqueue_work(url, 1, 0.0))
    plant(url, template)
    later = asyncio.run(enqueue_work(url, 5, 0.0))  # queued behind the bad entries
    worker = start_worker(url, log, "-c", "2", app="app_stores:app")
    try:
        wait_for(lambda: not live(asyncio.run(states(url))) or worker.poll() is not None,
                 60, "every job to end")
        alive = worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    records = asyncio.run(dead_records(url))
    counts = asyncio.run(states(url))
    print(f"\n{kind}: " + ", ".join(f"{job_id}: {r.error[:60]!r}"
                                   for job_id, r in records.items()))
    assert alive, "the worker died"
    check_dead(records)
    assert counts[wh.State.SUCCEEDED] == 1 + len(later)
    assert worker.returncode == 0
    errors = log.with_suffix(".workers.log").read_text()
    assert "Traceback" not in errors, errors[-3000:]


async def test_malformed_entries_go_dead_in_the_memory_store():
    # The memory store lives in one process, so the worker runs here; its enqueue stores
    # whatever payload bytes it is given, which is as straight as writing gets. Its headers
    # are kept as a dict, so they cannot be malformed.
    bad = {job_id: entry for job_id, entry in BAD.items() if job_id not in BAD_HEADERS}
    app = wh.App("memory://")
    ran: list[str] = []

    @app.handler("work")
    async def work(job: wh.Job) -> None:
        ran.append(job.id)

    with pytest.raises(wh.SerializationError, match="args too large"):
        await app.enqueue("work", {"blob": "x" * HUGE})  # refused before anything is written
    backend = await app.backend()
    [template] = [ref.id for ref in await app.enqueue_many([wh.Job("work")]) if ref]
    await backend.enqueue([NewJob(id=job_id, name=name, queue="default", payload=payload,
                                  headers={}, priority=0, timeout=None)
                           for job_id, (name, payload, _) in bad.items()])
    later = [ref.id for ref in await app.enqueue_many([wh.Job("work") for _ in range(5)])
             if ref]
    worker = wh.Worker(app, concurrency=2)
    await worker.start()
    try:
        assert await app.wait_idle(timeout=60)
        check_dead({job_id: r for job_id in bad if (r := await backend.get(job_id)) is not None},
                   bad)
        assert sorted(ran) == sorted([template, *later])
        # Still fetching: one more job runs.
        ref = await app.enqueue("work")
        assert ref is not None
        await ref.result(timeout=30)
    finally:
        await worker.stop()
        await app.close()
