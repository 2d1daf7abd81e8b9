"""PostgresTableSource against the real PostgreSQL: through Worker.consume and LocalWorker."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections import Counter
from pathlib import Path

import psycopg
import pytest

import workhorse as wh
from tests.faults.procs import stop, wait_for
from tests.faults.servers import PostgresServer
from tests.sources.conftest import WAIT, Recorder, Schema
from tests.sources.procs import start_consumer, started
from workhorse.backends.base import State
from workhorse.consume import MESSAGE_ID_HEADER
from workhorse.sources.base import SourceClosed
from workhorse.sources.postgres_table import PostgresTableSource, create_table


async def inbox(schema: Schema, **options: object) -> PostgresTableSource:
    await create_table(schema.url, schema.table("inbox"))
    settings: dict[str, object] = {"poll_interval": 0.05, "lease": 5.0, **options}
    return PostgresTableSource(schema.url, schema.table("inbox"), **settings)  # type: ignore[arg-type]


async def test_every_row_is_handled_and_marked_done_once(app: wh.App, recorder: Recorder,
                                                         schema: Schema) -> None:
    seen: Counter[int] = Counter()

    @app.handler("count")
    async def count(job: wh.Job) -> None:
        seen[job.args["n"]] += 1

    source = await inbox(schema)
    for n in range(30):
        await source.add({"n": n})
    worker = wh.Worker(app, concurrency=4, schedules=False)
    consumer = worker.consume(source, "count", concurrency=5)
    await worker.start()
    try:
        await recorder.wait(30)
    finally:
        await worker.stop()
    assert seen == Counter(range(30))
    assert consumer.stats.acked == 30
    rows = await schema.rows("SELECT status, deliveries, done_at IS NOT NULL, locked_until"
                             " FROM {schema}.inbox")
    assert rows == [("done", 1, True, None)] * 30


async def test_a_503_is_retried_then_dead_and_a_400_dead_at_once(
        app: wh.App, recorder: Recorder, schema: Schema) -> None:
    attempts: Counter[int] = Counter()

    @app.handler("check", retries=2, backoff=wh.backoff.constant(0.05))
    async def check(job: wh.Job) -> None:
        attempts[job.args["status"]] += 1
        raise wh.JobError(job.args["status"], f"failed with {job.args['status']}")

    source = await inbox(schema)
    await source.add({"status": 503})
    await source.add({"status": 400})
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("check"), source)
        await recorder.wait(4)
    assert attempts == {503: 3, 400: 1}
    rows = await schema.rows("SELECT body->>'status', status, deliveries, error"
                             " FROM {schema}.inbox ORDER BY id")
    assert rows == [("503", "dead", 3, "failed with 503"), ("400", "dead", 1, "failed with 400")]


async def test_an_outbox_table_marks_rows_published_and_keeps_dead_ones_as_jobs(
        app: wh.App, recorder: Recorder, schema: Schema) -> None:
    published: list[str] = []

    @app.handler("publish")
    async def publish(job: wh.Job) -> None:
        if job.args["topic"] == "bad":
            raise wh.JobError(400, "unknown topic")
        published.append(job.args["topic"])

    async with await psycopg.AsyncConnection.connect(schema.url, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE {schema.name}.outbox (event_id bigserial PRIMARY KEY,"
            " payload jsonb NOT NULL, attempts int NOT NULL DEFAULT 0,"
            " claimed_until timestamptz, published_at timestamptz)")
        await conn.execute(f"INSERT INTO {schema.name}.outbox (payload) VALUES"
                           ' (\'{"topic": "a"}\'), (\'{"topic": "bad"}\')')
    source = PostgresTableSource(
        schema.url, schema.table("outbox"), id_column="event_id", body_column="payload",
        headers_column=None, deliveries_column="attempts", lease_column="claimed_until",
        status_column=None, done_column="published_at", error_column=None,
        poll_interval=0.05)
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("publish"), source)
        await recorder.wait(2)
    assert published == ["a"]
    rows = await schema.rows("SELECT payload->>'topic', published_at IS NOT NULL"
                             " FROM {schema}.outbox ORDER BY event_id")
    assert rows == [("a", True), ("bad", True)]  # the bad one is done here, dead in the app
    dead = await (await app.backend()).list_jobs(state=State.DEAD)
    assert [(json.loads(r.payload), r.headers[MESSAGE_ID_HEADER]) for r in dead] == [
        ({"topic": "bad"}, "2")]
    await app.close()


async def test_a_killed_consumer_loses_nothing(app: wh.App, recorder: Recorder,
                                               schema: Schema, tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    deliveries: dict[str, int] = {}

    @app.handler("take")
    async def take(job: wh.Job) -> None:
        seen[job.headers["key"]] += 1
        deliveries[job.headers["key"]] = job.attempt

    source = await inbox(schema)
    for n in range(10):
        await source.add({"n": n}, {"key": str(n)})
    log = tmp_path / "doomed.log"
    proc = start_consumer("postgres", schema.url, schema.table("inbox"), log)
    try:
        await asyncio.to_thread(wait_for, lambda: len(started(log)) == 4, WAIT,
                                "the doomed consumer to start 4 messages")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        stop(proc)
    taken = {key for key, _ in started(log)}
    leased = await schema.rows("SELECT count(*) FROM {schema}.inbox"
                               " WHERE locked_until IS NOT NULL")
    assert leased == [(4,)]

    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("take"), source)
        await recorder.wait(10)
    assert seen == Counter(str(n) for n in range(10))
    assert {key for key, times in deliveries.items() if times == 2} == taken
    rows = await schema.rows("SELECT DISTINCT status FROM {schema}.inbox")
    assert rows == [("done",)]


async def test_a_row_whose_lease_was_taken_over_is_not_settled_by_its_old_claim(
        schema: Schema) -> None:
    source = await inbox(schema)
    await source.add({"n": 1})
    old_claims = source.messages(prefetch=1)
    first = await anext(old_claims)
    await old_claims.aclose()
    # As if its consumer had stalled past its lease: the row is free for another claim.
    await schema.rows("UPDATE {schema}.inbox SET locked_until = now() - interval '1 second'"
                      " RETURNING id")
    other = await inbox(schema)
    new_claims = other.messages(prefetch=1)
    second = await asyncio.wait_for(anext(new_claims), WAIT)
    assert (first.id, first.deliveries, second.deliveries) == (second.id, 1, 2)
    with pytest.raises(SourceClosed, match="claimed again"):
        await first.ack()
    await second.ack()
    await new_claims.aclose()
    assert await schema.rows("SELECT status FROM {schema}.inbox") == [("done",)]
    await source.close()
    await other.close()


async def test_the_source_reconnects_when_postgres_restarts(
        app: wh.App, recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    @app.handler("note")
    async def note(job: wh.Job) -> None:
        seen.append(job.args["n"])

    server = await asyncio.to_thread(PostgresServer)
    try:
        await asyncio.to_thread(server.start)
        await create_table(server.url, "inbox")
        source = PostgresTableSource(server.url, "inbox", poll_interval=0.05,
                                     reconnect_cap=0.2)
        await source.add({"n": 1})
        async with wh.LocalWorker(app) as worker:
            worker.perform_receive(wh.Job("note"), source)
            await recorder.wait(1)
            with caplog.at_level(logging.WARNING, logger="workhorse.source"):
                await asyncio.to_thread(server.stop, mode="immediate")
                await asyncio.to_thread(wait_for, lambda: "reconnecting" in caplog.text,
                                        WAIT, "the source to notice PostgreSQL went away")
                await asyncio.to_thread(server.start)
                async with await psycopg.AsyncConnection.connect(server.url,
                                                                 autocommit=True) as conn:
                    await conn.execute("INSERT INTO inbox (body) VALUES ('{\"n\": 2}')")
                await recorder.wait(2, timeout=20)
        assert seen == [1, 2]
    finally:
        await asyncio.to_thread(server.cleanup)
