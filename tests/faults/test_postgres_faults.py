"""Faults on PostgreSQL with real worker processes: SIGKILL mid-run, connections killed with
pg_terminate_backend, an undecodable payload row."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter

import psycopg
import pytest

import workhorse as wh

from .procs import count_state, enqueue_work, read_log, start_worker, stop, wait_for

pytestmark = pytest.mark.slow

SERVER = os.environ.get("WORKHORSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url():
    schema = f"whfault_{uuid.uuid4().hex[:10]}"
    # The application name marks this test's connections, so only they are terminated.
    yield f"{SERVER}?schema={schema}&application_name={schema}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def schema_of(url: str) -> str:
    return url.split("schema=", 1)[1].split("&", 1)[0]





def test_sigkill_a_worker_mid_run_with_500_jobs(pg_url, tmp_path):
    log = tmp_path / "attempts.log"
    ids = asyncio.run(enqueue_work(pg_url, 500, 0.1))
    first = start_worker(pg_url, log, "-c", "40", "--lease", "2")
    second = None
    try:
        wait_for(lambda: len(read_log(log)) >= 120, 60, "the first worker to get going")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = start_worker(pg_url, log, "-c", "40", "--lease", "2")
        wait_for(lambda: count_state(pg_url, wh.State.SUCCEEDED) == 500, 120, "all 500 jobs")
    finally:
        stop(first)
        if second is not None:
            stop(second)
    entries = read_log(log)
    ended = Counter(e.job_id for e in entries if e.kind == "end")
    missing = set(ids) - set(ended)
    duplicates = sum(n - 1 for n in ended.values() if n > 1)
    rerun = {e.job_id for e in entries if e.kind == "start" and e.attempt > 1}
    print(f"\npostgres SIGKILL, 500 jobs: missing={len(missing)} duplicate completions="
          f"{duplicates} restarted={len(rerun)}")
    assert missing == set()
    assert rerun, "the kill should have interrupted jobs in flight"


def test_worker_connections_killed_mid_run_reconnect_and_lose_nothing(pg_url, tmp_path):
    log = tmp_path / "attempts.log"
    ids = asyncio.run(enqueue_work(pg_url, 300, 0.02))
    worker = start_worker(pg_url, log, "-c", "10")
    try:
        wait_for(lambda: len(read_log(log)) >= 60, 60, "the worker to get going")
        with psycopg.connect(SERVER, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s", (schema_of(pg_url),)).fetchone()[0]
        assert killed >= 1
        wait_for(lambda: count_state(pg_url, wh.State.SUCCEEDED) == 300, 120,
                 "every job to finish after the connections were killed")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    ended = {e.job_id for e in read_log(log) if e.kind == "end"}
    print(f"\npg_terminate_backend on {killed} connections: {len(set(ids) - ended)} missing")
    assert set(ids) <= ended
    assert worker.returncode == 0


def test_a_row_with_an_undecodable_payload_goes_dead(pg_url, tmp_path):
    log = tmp_path / "attempts.log"
    [good] = asyncio.run(enqueue_work(pg_url, 1, 0.0))
    schema = schema_of(pg_url)
    with psycopg.connect(SERVER, autocommit=True) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'jobs' AND column_default IS NULL", (schema,))]
        assert "payload" in columns
        listed = ", ".join(f'"{c}"' for c in columns if c != "id" and c != "payload")
        conn.execute(
            f'INSERT INTO "{schema}".jobs (id, payload, {listed}) '
            f'SELECT %s, %s, {listed} FROM "{schema}".jobs WHERE id = %s',
            ("garbage-row", b"\xff\xfe not json", good))
    worker = start_worker(pg_url, log, "-c", "4")
    try:
        wait_for(lambda: count_state(pg_url, wh.State.DEAD) == 1, 60, "the garbage to die")
        later = asyncio.run(enqueue_work(pg_url, 5, 0.0))
        wait_for(lambda: count_state(pg_url, wh.State.SUCCEEDED) == 6, 60, "the good jobs")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)

    async def dead() -> wh.backends.base.JobRecord:
        app = wh.App(pg_url)
        try:
            return await (await app.backend()).get("garbage-row")
        finally:
            await app.close()

    record = asyncio.run(dead())
    assert (record.state, record.status) == (wh.State.DEAD, 400)
    assert record.error.startswith("undecodable payload")
    assert len(later) == 5
    assert worker.returncode == 0
