"""RedisStreamSource against the real Redis: through Worker.consume and LocalWorker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import workhorse as wh
from tests.faults.servers import RedisServer
from tests.sources.conftest import Recorder, Stream
from tests.sources.procs import kill_a_consumer_holding
from tests.sources.scenarios import (
    Stuck,
    assert_dead_at_first_attempt,
    assert_each_acked_once,
    assert_retried_then_dead,
    consume_counted,
    consume_until,
    count_each,
    fail_400,
    fail_503,
    receive_until,
    receiving,
    record_notes,
    record_takes,
    until_logged,
)
from workhorse.sources.redis_streams import RedisStreamSource


def source_for(stream: Stream, url: str | None = None, **options: object) -> RedisStreamSource:
    settings: dict[str, object] = {"claim_idle": 0.5, "block": 0.1, **options}
    return RedisStreamSource(url or stream.url, stream.name, "g", **settings)  # type: ignore[arg-type]


async def pending(stream: Stream) -> int:
    return int((await stream.client.xpending(stream.name, "g"))["pending"])


async def test_every_message_is_handled_and_acked_once(
        app: wh.App, recorder: Recorder, stream: Stream,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workhorse.source")
    seen = count_each(app)
    source = source_for(stream)
    for n in range(30):
        await source.add({"n": n})
    consumer = await consume_counted(app, recorder, source, 30)
    assert_each_acked_once(seen, consumer, 30)
    assert await pending(stream) == 0
    assert await stream.client.xlen(stream.dead) == 0
    # The consumer reports its progress, never the payloads.
    assert f"{source.name} stopped: received 30, acked 30, nacked 0, dead 0" in caplog.text
    assert '"n"' not in caplog.text


async def test_a_503_is_redelivered_then_dead_lettered_after_its_retries(
        app: wh.App, recorder: Recorder, stream: Stream) -> None:
    attempts = fail_503(app)
    source = source_for(stream)
    entry = await source.add({"order": 1}, {"trace": "t"})
    await receive_until(app, recorder, source, "flaky", 3)
    assert_retried_then_dead(attempts, recorder)
    dead = await stream.client.xrange(stream.dead)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"body"] == b'{"order": 1}' and fields[b"headers"] == b'{"trace": "t"}'
    assert fields[b"reason"] == b"upstream down" and fields[b"deliveries"] == b"3"
    assert fields[b"message_id"] == entry.encode()
    assert await pending(stream) == 0


async def test_a_400_is_dead_lettered_at_once(app: wh.App, recorder: Recorder,
                                              stream: Stream) -> None:
    fail_400(app, "no such customer", retries=5)
    source = source_for(stream)
    await source.add({"customer": 0})
    consumer = await consume_until(app, recorder, source, "strict", 1)
    assert_dead_at_first_attempt(recorder, consumer)
    assert (await stream.client.xrange(stream.dead))[0][1][b"reason"] == b"no such customer"
    assert await pending(stream) == 0


async def test_a_graceful_stop_nacks_a_stuck_message_for_the_next_consumer(
        app: wh.App, recorder: Recorder, stream: Stream) -> None:
    stuck = Stuck.register(app)
    producer = source_for(stream)
    await producer.add({"x": 1})
    await producer.close()
    await stuck.stop_while_stuck(app, source_for(stream, consumer="first"))
    assert await pending(stream) == 1  # nacked: still pending, not lost

    await receive_until(app, recorder, source_for(stream, consumer="second"), "stuck", 2)
    assert stuck.runs == [1, 2]
    assert await pending(stream) == 0


async def test_a_killed_consumer_loses_nothing(app: wh.App, recorder: Recorder,
                                               stream: Stream, tmp_path: Path) -> None:
    takes = record_takes(app)
    source = source_for(stream, consumer="survivor")
    for n in range(10):
        await source.add({"n": n}, {"key": str(n)})
    taken = await kill_a_consumer_holding(4, "redis", stream.url, stream.name,
                                          tmp_path / "doomed.log")
    assert await pending(stream) == 4

    await receive_until(app, recorder, source, "take", 10)
    takes.assert_each_ran_once_and_only_taken_ones_twice_delivered(10, taken)
    assert await pending(stream) == 0


async def test_the_source_reconnects_when_redis_restarts(
        app: wh.App, recorder: Recorder, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    seen = record_notes(app)
    server = RedisServer(tmp_path)
    server.start()
    try:
        source = RedisStreamSource(server.url, "orders", "g", claim_idle=0.5, block=0.1,
                                   reconnect_cap=0.2)
        await source.add({"n": 1})
        async with receiving(app, source, "note"):
            await recorder.wait(1)
            with caplog.at_level(logging.WARNING, logger="workhorse.source"):
                server.kill()
                await until_logged(caplog, "reconnecting", "the source to notice Redis went away")
                server.start()
                producer = RedisStreamSource(server.url, "orders", "g")
                await producer.add({"n": 2})
                await producer.close()
                await recorder.wait(2)
        assert seen == [1, 2]
    finally:
        server.stop()


async def test_a_deleted_stream_and_group_are_created_again(
        app: wh.App, recorder: Recorder, stream: Stream,
        caplog: pytest.LogCaptureFixture) -> None:
    seen = record_notes(app)
    source = source_for(stream)
    await source.add({"n": 1})
    async with receiving(app, source, "note"):
        await recorder.wait(1)
        with caplog.at_level(logging.WARNING, logger="workhorse.source"):
            await stream.client.delete(stream.name)
            await until_logged(caplog, "creating the group again",
                               "the source to notice its group is gone")
        await stream.client.xadd(stream.name, {"body": '{"n": 2}'})
        await recorder.wait(2)
    assert seen == [1, 2]
