"""The transactional outbox with workhorse: rows of a PostgreSQL table published to NATS
JetStream or RabbitMQ, each at least once, and marked published.

Your application inserts a row into ``outbox`` in the same transaction as the change it
announces. This program reads the table through ``PostgresTableSource`` and runs the handler
``publish_outbox`` once per row: it publishes the row's payload (to the JetStream subject
``<prefix>.<topic>`` with ``Nats-Msg-Id`` = the row id, or to the RabbitMQ topic exchange
``<exchange>`` with routing key ``<topic>``, ``message_id`` = the row id, publisher confirms
on) and returns; the success acks the row, which sets ``status = 'done'`` and
``published_at``. A broker that is down fails the run (500): the row is retried with backoff.
A publisher killed between a publish and its ack leaves the row leased; it is published
again once the lease ends, so a consumer may see an id twice (JetStream drops the repeat
within its duplicate window; a RabbitMQ consumer deduplicates by ``message_id``).

    python examples/outbox_publisher.py --url postgresql://postgres@127.0.0.1:5432/test \\
        --broker nats --seed 10 --drain

``--seed N`` inserts N demo rows first; ``--drain`` exits once no row is left to publish;
``--metrics-port P`` serves Prometheus metrics at http://127.0.0.1:P/metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from typing import Any, Protocol

import psycopg
from psycopg import sql

import workhorse as wh
from workhorse.sources.postgres_table import PostgresTableSource
from workhorse.telemetry.prometheus import prometheus_metrics

log = logging.getLogger("outbox")

SCHEMA = """
-- jsonb_build_object is only STABLE in general (it takes any type); for these three types
-- its result depends on its arguments alone, so the wrapper may be IMMUTABLE, as a generated
-- column needs.
CREATE OR REPLACE FUNCTION {body_function}(id bigint, topic text, payload jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT jsonb_build_object('id', id, 'topic', topic, 'payload', payload) $$;

CREATE TABLE IF NOT EXISTS {table} (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    -- What the handler receives: the row as one JSON object.
    body jsonb GENERATED ALWAYS AS ({body_function}(id, topic, payload)) STORED,
    -- Kept by PostgresTableSource: 'ready', 'done' or 'dead', deliveries, lease, dead reason.
    status text NOT NULL DEFAULT 'ready',
    deliveries integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    error text
);

-- A notification per INSERT statement: the publisher looks for rows at once, not at its
-- next poll.
CREATE OR REPLACE FUNCTION {notify_function}() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_notify({channel}, ''); RETURN NULL; END $$;
CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {notify_function}();
"""


def channel_of(table: str) -> str:
    """The channel the outbox's insert trigger notifies."""
    return f"{table.split('.')[-1]}_rows"


def identifier(table: str) -> sql.Identifier:
    """``name`` or ``schema.name`` as a quoted SQL identifier."""
    return sql.Identifier(*table.split("."))


async def create_outbox(url: str, table: str = "outbox") -> None:
    """Create the outbox table if it does not exist."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        *schema, name = table.split(".")
        await conn.execute(sql.SQL(SCHEMA).format(
            table=identifier(table), body_function=sql.Identifier(*schema, f"{name}_body"),
            notify_function=sql.Identifier(*schema, f"{name}_notify"),
            trigger=sql.Identifier(f"{name}_notify"), channel=sql.Literal(channel_of(table))))


async def seed(url: str, table: str, count: int) -> None:
    """Insert ``count`` demo rows, as an application would beside its own writes."""
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.cursor() as cur:
        await cur.executemany(
            sql.SQL("INSERT INTO {} (topic, payload) VALUES (%s, %s)").format(
                identifier(table)),
            [("orders.created", json.dumps({"order": n})) for n in range(count)])


def outbox_source(url: str, table: str = "outbox", *, lease: float = 30.0) -> PostgresTableSource:
    """The outbox rows not yet published, as messages; an ack marks a row published. A row
    whose publisher died is taken again ``lease`` seconds after it was claimed."""
    return PostgresTableSource(url, table, body_column="body", headers_column=None,
                               status_column="status", done_column="published_at",
                               error_column="error", lease=lease,
                               notify_channel=channel_of(table))


class Publisher(Protocol):
    async def publish(self, row_id: int, topic: str, payload: Any) -> None: ...
    async def close(self) -> None: ...


class NatsPublisher:
    """Publishes to JetStream; the stream ``stream`` (subjects ``<prefix>.>``) is created if
    missing. ``publish`` returns once the stream stored the message."""

    def __init__(self, servers: str, stream: str, prefix: str) -> None:
        self.servers, self.stream, self.prefix = servers, stream, prefix
        self._js: Any = None
        self._nc: Any = None

    async def connect(self) -> None:
        import nats

        self._nc = await nats.connect(self.servers, max_reconnect_attempts=-1)
        self._js = self._nc.jetstream()
        try:
            await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self._js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])

    async def publish(self, row_id: int, topic: str, payload: Any) -> None:
        await self._js.publish(f"{self.prefix}.{topic}", json.dumps(payload).encode(),
                               headers={"Nats-Msg-Id": str(row_id)})

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


class RabbitPublisher:
    """Publishes persistent messages to the durable topic exchange ``exchange`` with
    publisher confirms; ``queue`` (bound with ``#``) keeps them for a reader."""

    def __init__(self, url: str, exchange: str, queue: str) -> None:
        self.url, self.exchange_name, self.queue = url, exchange, queue
        self._connection: Any = None
        self._exchange: Any = None

    async def connect(self) -> None:
        import aio_pika

        self._connection = await aio_pika.connect_robust(self.url)
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(self.queue, durable=True)
        await queue.bind(self._exchange, routing_key="#")

    async def publish(self, row_id: int, topic: str, payload: Any) -> None:
        import aio_pika

        message = aio_pika.Message(json.dumps(payload).encode(), message_id=str(row_id),
                                   content_type="application/json",
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        # Waits for the broker's confirm; an unroutable message (mandatory) raises.
        await self._exchange.publish(message, routing_key=topic)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


def build_app(publisher: Publisher, *, pace: float = 0.0) -> wh.App:
    """The workhorse app: ``publish_outbox`` with logging, timing and metrics on."""
    app = wh.App("memory://")  # the outbox table is the durable store; nothing is queued
    app.use(wh.middleware.logging(), wh.middleware.timing())
    prometheus_metrics(app)

    @app.handler("publish_outbox", retries=1_000_000, backoff=wh.exponential(base=0.5, cap=30))
    async def publish_outbox(job: wh.Job[Any]) -> None:
        row = job.args
        if not isinstance(row.get("topic"), str) or not row["topic"]:
            raise wh.JobError(400, "outbox row without a topic")
        if pace:
            await asyncio.sleep(pace)
        await publisher.publish(row["id"], row["topic"], row["payload"])

    return app


async def remaining(url: str, table: str) -> int:
    """Rows still to publish (ready or waiting for a retry)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE status = 'ready'")
                                 .format(identifier(table)))
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def run(args: argparse.Namespace, stop: asyncio.Event | None = None) -> wh.App:
    """Publish the outbox until ``stop`` is set (or, with ``--drain``, until it is empty)."""
    await create_outbox(args.url, args.table)
    if args.seed:
        await seed(args.url, args.table, args.seed)
    publisher: NatsPublisher | RabbitPublisher
    if args.broker == "nats":
        publisher = NatsPublisher(args.nats_url, args.stream, args.subject_prefix)
    else:
        publisher = RabbitPublisher(args.amqp_url, args.exchange, args.queue)
    await publisher.connect()
    app = build_app(publisher, pace=args.pace)
    worker = wh.Worker(app, concurrency=args.concurrency, schedules=False)
    source = outbox_source(args.url, args.table, lease=args.lease)
    consumer = worker.consume(source, "publish_outbox")
    stop = stop or asyncio.Event()
    await worker.start()
    if args.metrics_port:
        from workhorse.health import serve_worker

        serve_worker(worker, args.metrics_port, "127.0.0.1", metrics=True)
    try:
        while not stop.is_set():
            if args.drain and await remaining(args.url, args.table) == 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await worker.stop()
        await publisher.close()
    stats = consumer.stats
    log.info("published %d rows (%d retried, %d dead)", stats.acked - stats.dead,
             stats.nacked, stats.dead)
    return app


async def run_until_signalled(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await run(args, stop)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="PostgreSQL URL of the outbox")
    parser.add_argument("--table", default="outbox", help="outbox table (may be schema.name)")
    parser.add_argument("--broker", choices=["nats", "rabbitmq"], default="nats")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="OUTBOX", help="JetStream stream")
    parser.add_argument("--subject-prefix", default="outbox", help="subject = PREFIX.topic")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange", default="outbox", help="RabbitMQ topic exchange")
    parser.add_argument("--queue", default="outbox", help="RabbitMQ queue bound to it")
    parser.add_argument("--seed", type=int, default=0, help="insert N demo rows first")
    parser.add_argument("--drain", action="store_true", help="exit once all are published")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=30.0,
                        help="seconds before a dead publisher's rows are taken again")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds to wait per publish")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics there")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run_until_signalled(parse(argv)))


if __name__ == "__main__":
    main()
