"""PostgresTableSource against the real PostgreSQL: through Worker.consume and LocalWorker."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path

import psycopg
import pytest

import workhorse as wh
from tests.faults.servers import PostgresServer
from tests.sources.conftest import WAIT, Recorder, Schema
from tests.sources.procs import kill_a_consumer_holding
from tests.sources.scenarios import (
    assert_each_acked_once,
    consume_counted,
    count_each,
    receive_until,
    receiving,
    record_notes,
    record_takes,
    until_logged,
)
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
    seen = count_each(app)
    source = await inbox(schema)
    for n in range(30):
        await source.add({"n": n})
    consumer = await consume_counted(app, recorder, source, 30)
    assert_each_acked_once(seen, consumer, 30)
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
    await receive_until(app, recorder, source, "check", 4)
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
    await receive_until(app, recorder, source, "publish", 2)
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
    takes = record_takes(app)
    source = await inbox(schema)
    for n in range(10):
        await source.add({"n": n}, {"key": str(n)})
    taken = await kill_a_consumer_holding(4, "postgres", schema.url, schema.table("inbox"),
                                          tmp_path / "doomed.log")
    leased = await schema.rows("SELECT count(*) FROM {schema}.inbox"
                               " WHERE locked_until IS NOT NULL")
    assert leased == [(4,)]

    await receive_until(app, recorder, source, "take", 10)
    takes.assert_each_ran_once_and_only_taken_ones_twice_delivered(10, taken)
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
    seen = record_notes(app)
    server = await asyncio.to_thread(PostgresServer)
    try:
        await asyncio.to_thread(server.start)
        await create_table(server.url, "inbox")
        source = PostgresTableSource(server.url, "inbox", poll_interval=0.05,
                                     reconnect_cap=0.2)
        await source.add({"n": 1})
        async with receiving(app, source, "note"):
            await recorder.wait(1)
            with caplog.at_level(logging.WARNING, logger="workhorse.source"):
                await asyncio.to_thread(server.stop, mode="immediate")
                await until_logged(caplog, "reconnecting",
                                   "the source to notice PostgreSQL went away")
                await asyncio.to_thread(server.start)
                async with await psycopg.AsyncConnection.connect(server.url,
                                                                 autocommit=True) as conn:
                    await conn.execute("INSERT INTO inbox (body) VALUES ('{\"n\": 2}')")
                await recorder.wait(2, timeout=20)
        assert seen == [1, 2]
    finally:
        await asyncio.to_thread(server.cleanup)


class IdleTelling(PostgresTableSource):
    """Sets ``idle`` whenever a claim finds no row: the source then waits for its poll or
    a notification."""

    def __init__(self, *args: object, **options: object) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.idle = asyncio.Event()

    async def _claim(self, limit: int) -> list:  # type: ignore[type-arg]
        claimed = await super()._claim(limit)
        if not claimed:
            self.idle.set()
        return claimed


async def test_a_notification_brings_a_new_row_without_waiting_for_the_poll(
        app: wh.App, recorder: Recorder, schema: Schema) -> None:
    seen = count_each(app)
    table = schema.table("inbox")
    await create_table(schema.url, table, notify_channel=f"{schema.name}_inbox")
    # A poll a minute apart: only the notification can bring the row within the wait.
    source = IdleTelling(schema.url, table, poll_interval=60.0,
                         notify_channel=f"{schema.name}_inbox")
    async with receiving(app, source, "count"):
        await asyncio.wait_for(source.idle.wait(), WAIT)
        async with await psycopg.AsyncConnection.connect(schema.url, autocommit=True) as conn:
            await conn.execute(f"INSERT INTO {table} (body) VALUES (%s)",
                               (json.dumps({"n": 0}),))
        await recorder.wait(1)
    assert seen == Counter([0])
