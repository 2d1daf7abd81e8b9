"""RabbitMQSource against the real RabbitMQ: through Worker.consume and LocalWorker.

The shared broker is never restarted: the reconnect test cuts the source's connections at a
TCP proxy in front of it instead."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import workhorse as wh
from tests.sources.brokers import (
    AMQP_URL,
    RabbitNames,
    TcpProxy,
    amqp_channel,
    drop_queues,
    publish_amqp,
    queue_depth,
)
from tests.sources.conftest import WAIT, Recorder
from tests.sources.procs import kill_a_consumer_holding
from tests.sources.scenarios import (
    Stuck,
    assert_dead_at_first_attempt,
    assert_each_acked_once,
    assert_kept_as_dead_job,
    assert_retried_then_dead,
    consume_counted,
    consume_until,
    count_each,
    eventually,
    fail_400,
    fail_503,
    receive_until,
    receiving,
    record_takes,
    until_logged,
)
from workhorse.sources.rabbitmq import DELIVERIES_HEADER, RabbitMQSource


@pytest.fixture
async def names() -> AsyncIterator[RabbitNames]:
    fresh = RabbitNames.fresh()
    yield fresh
    async with amqp_channel() as channel:
        await drop_queues(channel, fresh)


@pytest.fixture
async def channel(names: RabbitNames) -> AsyncIterator[Any]:
    """A channel on the broker, the test's queues declared by a source's topology."""
    async with amqp_channel() as chan:
        await source_for(names).declare_topology(chan)
        yield chan


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
    seen = count_each(app)
    for n in range(30):
        await publish_amqp(channel, names.queue, {"n": n})
    source = source_for(names)
    consumer = await consume_counted(app, recorder, source, 30)
    assert_each_acked_once(seen, consumer, 30)
    assert source.settled == {"ack": 30, "nack": 0, "dead_letter": 0}
    assert await drained(channel, names)
    assert await queue_depth(channel, names.dead_queue) == 0


async def test_a_503_is_redelivered_then_dead_lettered_after_its_retries(
        app: wh.App, recorder: Recorder, names: RabbitNames, channel: Any) -> None:
    attempts = fail_503(app)
    await publish_amqp(channel, names.queue, {"order": 1}, {"trace": "t"})
    await receive_until(app, recorder, source_for(names), "flaky", 3)
    assert_retried_then_dead(attempts, recorder)
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
    fail_400(app, "no such customer", retries=5)
    await publish_amqp(channel, names.queue, {"customer": 0})
    consumer = await consume_until(app, recorder, source_for(names), "strict", 1)
    assert_dead_at_first_attempt(recorder, consumer)
    dead = await (await channel.get_queue(names.dead_queue)).get(timeout=WAIT)
    assert dead.body == b'{"customer": 0}'
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    await dead.ack()
    assert await drained(channel, names)


async def test_without_a_dead_letter_exchange_the_message_becomes_a_workhorse_dead_job(
        app: wh.App, recorder: Recorder, names: RabbitNames) -> None:
    fail_400(app, "malformed")
    async with amqp_channel() as chan:
        source = source_for(names, dead_letter_exchange=None)
        await source.declare_topology(chan)
        await publish_amqp(chan, names.queue, {"customer": 7})
        await receive_until(app, recorder, source, "strict", 1)
        await assert_kept_as_dead_job(app, {"customer": 7})
        assert await drained(chan, names)


async def test_a_killed_consumer_loses_nothing(app: wh.App, recorder: Recorder,
                                               names: RabbitNames, channel: Any,
                                               tmp_path: Path) -> None:
    takes = record_takes(app)
    for n in range(10):
        await publish_amqp(channel, names.queue, {"n": n}, {"key": str(n)})
    # It takes 4 (its concurrency and prefetch) and hangs on them.
    taken = await kill_a_consumer_holding(4, "rabbitmq", AMQP_URL, names.queue,
                                          tmp_path / "doomed.log")

    await receive_until(app, recorder, source_for(names), "take", 10)
    takes.assert_each_ran_once_and_only_taken_ones_twice_delivered(10, taken)
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
        source = source_for(names, url=url, reconnect_interval=0.1)
        async with receiving(app, source, "note"):
            await asyncio.wait_for(running.wait(), WAIT)
            with caplog.at_level(logging.WARNING, logger="workhorse.sources.rabbitmq"):
                await proxy.cut()
                await until_logged(caplog, "connection lost",
                                   "the source to notice the broker went away")
            cut.set()  # its ack fails: the broker requeued the message, which comes back
            await eventually(lambda: _accepted(proxy, 2), "the source to reconnect")
            await publish_amqp(channel, names.queue, {"n": 2})
            await recorder.wait(3)
        assert sorted(runs) == [(1, 1), (1, 2), (2, 1)]
        assert await drained(channel, names)
    finally:
        await proxy.stop()


async def _accepted(proxy: TcpProxy, count: int) -> bool:
    return proxy.accepted >= count


async def test_a_graceful_stop_nacks_a_stuck_message_for_the_next_consumer(
        app: wh.App, recorder: Recorder, names: RabbitNames, channel: Any) -> None:
    stuck = Stuck.register(app)
    await publish_amqp(channel, names.queue, {"x": 1})
    await stuck.stop_while_stuck(app, source_for(names))
    assert await queue_depth(channel, names.queue) == 1  # nacked: back in the queue

    await receive_until(app, recorder, source_for(names), "stuck", 2)
    assert stuck.runs == [1, 2]
    assert await drained(channel, names)


async def test_a_short_retry_delay_is_not_held_behind_a_long_one(
        names: RabbitNames, channel: Any) -> None:
    # RabbitMQ expires messages only at a queue's head: in one delay queue, a message nacked
    # for 30 s would hold back one nacked for 50 ms behind it.
    source = source_for(names)
    await publish_amqp(channel, names.queue, {"n": "slow"})
    await publish_amqp(channel, names.queue, {"n": "quick"})
    messages = source.messages(prefetch=10)
    try:
        slow, quick = [await asyncio.wait_for(anext(messages), WAIT) for _ in range(2)]
        assert (slow.body, quick.body) == ({"n": "slow"}, {"n": "quick"})
        await slow.nack(30.0)
        await quick.nack(0.05)
        again = await asyncio.wait_for(anext(messages), WAIT)
        assert (again.body, again.deliveries) == ({"n": "quick"}, 2)
        await again.ack()
        assert await queue_depth(channel, f"{names.delay_queue}.30000") == 1  # still waiting
    finally:
        await messages.aclose()
        await source.close()
