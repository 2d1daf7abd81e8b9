"""RabbitMQSource against the real RabbitMQ: through Worker.consume and LocalWorker.

The shared broker is never restarted: the reconnect test cuts the source's connections at a
TCP proxy in front of it instead."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import workhorse as wh
from tests.faults.procs import stop, wait_for
from tests.sources.brokers import (
    AMQP_URL,
    RabbitNames,
    TcpProxy,
    amqp_channel,
    drop_queues,
    eventually,
    publish_amqp,
    queue_depth,
    start_broker_consumer,
)
from tests.sources.conftest import WAIT, Recorder
from tests.sources.procs import started
from workhorse.sources.rabbitmq import DELIVERIES_HEADER, RabbitMQSource


@pytest.fixture
async def names() -> AsyncIterator[RabbitNames]:
    fresh = RabbitNames.fresh()
    yield fresh
    connection, channel = await amqp_channel()
    try:
        await drop_queues(channel, fresh)
    finally:
        await connection.close()


@pytest.fixture
async def channel(names: RabbitNames) -> AsyncIterator[Any]:
    """A channel on the broker, the test's queues declared by a source's topology."""
    connection, chan = await amqp_channel()
    source = source_for(names)
    await source.declare_topology(chan)
    yield chan
    await connection.close()


def source_for(names: RabbitNames, url: str = AMQP_URL, **options: Any) -> RabbitMQSource:
    settings: dict[str, Any] = {"dead_letter_exchange": names.dlx, **options}
    return RabbitMQSource(url, queue=names.queue, **settings)


async def drained(channel: Any, names: RabbitNames) -> bool:
    """Nothing left in the queue nor its delay queue (unacked deliveries would be requeued
    when their consumer's connection closed, so after a stop they show here)."""
    return (await queue_depth(channel, names.queue) == 0
            and await queue_depth(channel, names.delay_queue) == 0)


async def test_every_message_is_handled_and_acked_once(app: wh.App, recorder: Recorder,
                                                       names: RabbitNames, channel: Any) -> None:
    seen: Counter[int] = Counter()

    @app.handler("count")
    async def count(job: wh.Job) -> None:
        seen[job.args["n"]] += 1

    for n in range(30):
        await publish_amqp(channel, names.queue, {"n": n})
    source = source_for(names)
    worker = wh.Worker(app, concurrency=4, schedules=False)
    consumer = worker.consume(source, "count", concurrency=5)
    await worker.start()
    try:
        await recorder.wait(30)
    finally:
        await worker.stop()
    assert seen == Counter(range(30))
    assert consumer.stats.received == 30 and consumer.stats.acked == 30
    assert source.settled == {"ack": 30, "nack": 0, "dead_letter": 0}
    assert await drained(channel, names)
    assert await queue_depth(channel, names.dead_queue) == 0


async def test_a_503_is_redelivered_then_dead_lettered_after_its_retries(
        app: wh.App, recorder: Recorder, names: RabbitNames, channel: Any) -> None:
    attempts: list[int] = []

    @app.handler("flaky", retries=2, backoff=wh.backoff.constant(0.05))
    async def flaky(job: wh.Job) -> None:
        attempts.append(job.attempt)
        raise wh.JobError(503, "upstream down")

    await publish_amqp(channel, names.queue, {"order": 1}, {"trace": "t"})
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("flaky"), source_for(names))
        await recorder.wait(3)
    assert attempts == [1, 2, 3]
    assert [str(e.state) for e in recorder.finished] == ["retrying", "retrying", "dead"]
    dead = await (await channel.get_queue(names.dead_queue)).get(timeout=WAIT)
    assert dead.body == b'{"order": 1}' and dead.headers["trace"] == "t"
    assert dead.headers[DELIVERIES_HEADER] == 3
    # Two trips through the delay queue, then the reject into the dead-letter exchange.
    reasons = Counter(death["reason"] for death in dead.headers["x-death"])
    assert reasons == {"expired": 1, "rejected": 1}
    await dead.ack()
    assert await drained(channel, names)


async def test_a_400_is_dead_lettered_at_once(app: wh.App, recorder: Recorder,
                                              names: RabbitNames, channel: Any) -> None:
    @app.handler("strict", retries=5)
    async def strict(job: wh.Job) -> None:
        raise wh.JobError(400, "no such customer")

    await publish_amqp(channel, names.queue, {"customer": 0})
    worker = wh.Worker(app, schedules=False)
    consumer = worker.consume(source_for(names), "strict")
    await worker.start()
    try:
        await recorder.wait(1)
    finally:
        await worker.stop()
    assert [e.attempt for e in recorder.finished] == [1]
    assert consumer.stats.dead == 1 and consumer.stats.nacked == 0
    dead = await (await channel.get_queue(names.dead_queue)).get(timeout=WAIT)
    assert dead.body == b'{"customer": 0}'
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    await dead.ack()
    assert await drained(channel, names)


async def test_without_a_dead_letter_exchange_the_message_becomes_a_workhorse_dead_job(
        app: wh.App, recorder: Recorder, names: RabbitNames) -> None:
    @app.handler("strict")
    async def strict(job: wh.Job) -> None:
        raise wh.JobError(400, "malformed")

    connection, chan = await amqp_channel()
    try:
        source = source_for(names, dead_letter_exchange=None)
        await source.declare_topology(chan)
        await publish_amqp(chan, names.queue, {"customer": 7})
        async with wh.LocalWorker(app) as worker:
            worker.perform_receive(wh.Job("strict"), source)
            await recorder.wait(1)
        [job] = (await app.admin.jobs(state="dead")).items
        assert job.args == {"customer": 7}
        assert await drained(chan, names)
    finally:
        await connection.close()


async def test_a_killed_consumer_loses_nothing(app: wh.App, recorder: Recorder,
                                               names: RabbitNames, channel: Any,
                                               tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    deliveries: dict[str, int] = {}

    @app.handler("take")
    async def take(job: wh.Job) -> None:
        seen[job.headers["key"]] += 1
        deliveries[job.headers["key"]] = job.attempt

    for n in range(10):
        await publish_amqp(channel, names.queue, {"n": n}, {"key": str(n)})
    log = tmp_path / "doomed.log"
    proc = start_broker_consumer("rabbitmq", AMQP_URL, names.queue, "-", log)
    try:
        # It takes 4 (its concurrency and prefetch) and hangs on them.
        await asyncio.to_thread(wait_for, lambda: len(started(log)) == 4, WAIT,
                                "the doomed consumer to start 4 messages")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        stop(proc)
    taken = {key for key, _ in started(log)}

    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("take"), source_for(names))
        await recorder.wait(10)
    assert seen == Counter(str(n) for n in range(10))
    assert {key for key, times in deliveries.items() if times == 2} == taken
    assert await drained(channel, names)


async def test_the_source_reconnects_when_its_connection_is_cut(
        app: wh.App, recorder: Recorder, names: RabbitNames, channel: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    runs: list[tuple[int, int]] = []
    running = asyncio.Event()
    cut = asyncio.Event()

    @app.handler("note")
    async def note(job: wh.Job) -> None:
        runs.append((job.args["n"], job.attempt))
        if len(runs) == 1:  # in flight while the connection goes
            running.set()
            await cut.wait()

    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    try:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        await publish_amqp(channel, names.queue, {"n": 1})
        async with wh.LocalWorker(app) as worker:
            worker.perform_receive(wh.Job("note"),
                                   source_for(names, url=url, reconnect_interval=0.1))
            await asyncio.wait_for(running.wait(), WAIT)
            with caplog.at_level(logging.WARNING, logger="workhorse.sources.rabbitmq"):
                await proxy.cut()
                await eventually(lambda: _logged(caplog, "connection lost"),
                                 "the source to notice the broker went away")
            cut.set()  # its ack fails: the broker requeued the message, which comes back
            await eventually(lambda: _accepted(proxy, 2), "the source to reconnect")
            await publish_amqp(channel, names.queue, {"n": 2})
            await recorder.wait(3)
        assert sorted(runs) == [(1, 1), (1, 2), (2, 1)]
        assert await drained(channel, names)
    finally:
        await proxy.stop()


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def _accepted(proxy: TcpProxy, count: int) -> bool:
    return proxy.accepted >= count


async def test_a_graceful_stop_nacks_a_stuck_message_for_the_next_consumer(
        app: wh.App, recorder: Recorder, names: RabbitNames, channel: Any) -> None:
    runs: list[int] = []
    first_run = asyncio.Event()

    @app.handler("stuck")
    async def stuck(job: wh.Job) -> None:
        runs.append(job.attempt)
        first_run.set()
        if job.attempt == 1:
            await asyncio.Event().wait()

    await publish_amqp(channel, names.queue, {"x": 1})
    worker = wh.Worker(app, schedules=False)
    worker.consume(source_for(names), "stuck")
    await worker.start()
    await asyncio.wait_for(first_run.wait(), WAIT)
    await worker.stop(timeout=0.1)
    assert await queue_depth(channel, names.queue) == 1  # nacked: back in the queue

    async with wh.LocalWorker(app) as local:
        local.perform_receive(wh.Job("stuck"), source_for(names))
        await recorder.wait(2)
    assert runs == [1, 2]
    assert await drained(channel, names)
