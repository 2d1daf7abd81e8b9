"""examples/outbox_publisher.py against the real PostgreSQL, NATS and RabbitMQ: every row
published exactly once under normal running, at least once across a SIGKILL."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.faults.procs import stop
from tests.sources.brokers import (
    AMQP_URL,
    NATS_URL,
    NatsNames,
    RabbitNames,
    amqp_channel,
    drop_streams,
    jetstream,
    stream_messages,
)
from tests.sources.conftest import WAIT, Schema
from tests.sources.procs import start_script
from tests.sources.scenarios import eventually
from workhorse.telemetry.prometheus import prometheus_metrics

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "outbox_publisher.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("outbox_publisher", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


outbox = load_example()


class Broker:
    """Where the example publishes, private to one test, and what arrived there."""

    kind: str

    def flags(self) -> list[str]:
        raise NotImplementedError

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def received_ids(self) -> list[int]:
        """The outbox id of every message that arrived, duplicates included."""
        raise NotImplementedError


class NatsBroker(Broker):
    kind = "nats"

    def __init__(self) -> None:
        self.names = NatsNames.fresh()

    def flags(self) -> list[str]:
        return ["--broker", "nats", "--nats-url", NATS_URL, "--stream", self.names.stream,
                "--subject-prefix", self.names.subject]

    async def close(self) -> None:
        async with jetstream() as js:
            await drop_streams(js, self.names)

    async def received_ids(self) -> list[int]:
        async with jetstream() as js:
            messages = await stream_messages(js, self.names.stream)
        return [int(m.headers["Nats-Msg-Id"]) for m in messages]


class RabbitBroker(Broker):
    kind = "rabbitmq"

    def __init__(self) -> None:
        self.names = RabbitNames.fresh()
        self.exchange = f"{self.names.queue}.outbox"

    def flags(self) -> list[str]:
        return ["--broker", "rabbitmq", "--amqp-url", AMQP_URL, "--exchange", self.exchange,
                "--queue", self.names.queue]

    async def close(self) -> None:
        async with amqp_channel() as channel:
            await channel.queue_delete(self.names.queue)
            await channel.exchange_delete(self.exchange)

    async def received_ids(self) -> list[int]:
        async with amqp_channel() as channel:
            queue = await channel.get_queue(self.names.queue)
            ids = []
            while (message := await queue.get(fail=False)) is not None:
                ids.append(int(message.message_id))
                await message.ack()
            return ids


@pytest.fixture(params=["nats", "rabbitmq"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    made = NatsBroker() if request.param == "nats" else RabbitBroker()
    await made.open()
    try:
        yield made
    finally:
        await made.close()


async def rows(schema: Schema) -> list[tuple[Any, ...]]:
    return await schema.rows("SELECT id, status, published_at IS NOT NULL, deliveries"
                             " FROM {schema}.outbox ORDER BY id")


async def test_every_row_is_published_exactly_once(broker: Broker, schema: Schema) -> None:
    args = outbox.parse(["--url", schema.url, "--table", schema.table("outbox"), "--seed", "20",
                         "--drain", *broker.flags()])
    app = await asyncio.wait_for(outbox.run(args), 30)
    received = await broker.received_ids()
    assert sorted(received) == list(range(1, 21))  # each once, none missing
    assert await rows(schema) == [(n, "done", True, 1) for n in range(1, 21)]
    page = prometheus_metrics(app).render().decode()
    assert ('workhorse_jobs_completed_total{name="publish_outbox",queue="default",'
            'status="200"} 20.0') in page


async def test_a_killed_publisher_loses_no_row(broker: Broker, schema: Schema,
                                               tmp_path: Path) -> None:
    flags = ["--url", schema.url, "--table", schema.table("outbox"), "--lease", "1",
             "--concurrency", "2", *broker.flags()]
    await outbox.create_outbox(schema.url, schema.table("outbox"))
    await outbox.seed(schema.url, schema.table("outbox"), 40)

    async def published() -> int:
        return len([row for row in await rows(schema) if row[1] == "done"])

    proc = start_script(EXAMPLE, *flags, "--pace", "0.05", output=tmp_path / "publisher.log")
    try:
        async def some_published() -> bool:
            return await published() >= 5

        await eventually(some_published, "the publisher to publish 5 rows", WAIT)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        stop(proc)
    assert await published() < 40  # killed mid-stream

    await asyncio.wait_for(outbox.run(outbox.parse([*flags, "--drain"])), 30)
    received = Counter(await broker.received_ids())
    assert set(received) == set(range(1, 41))  # at least once
    assert all(status == "done" and marked for _, status, marked, _ in await rows(schema))
