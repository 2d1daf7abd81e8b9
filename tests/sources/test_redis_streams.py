"""RedisStreamSource against the real Redis: through Worker.consume and LocalWorker."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from pathlib import Path

import pytest

import workhorse as wh
from tests.faults.procs import stop, wait_for
from tests.faults.servers import RedisServer
from tests.sources.conftest import WAIT, Recorder, Stream
from tests.sources.procs import start_consumer, started
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
    seen: Counter[int] = Counter()

    @app.handler("count")
    async def count(job: wh.Job) -> None:
        seen[job.args["n"]] += 1

    source = source_for(stream)
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
    assert consumer.stats.received == 30 and consumer.stats.acked == 30
    assert await pending(stream) == 0
    assert await stream.client.xlen(stream.dead) == 0
    # The consumer reports its progress, never the payloads.
    assert f"{source.name} stopped: received 30, acked 30, nacked 0, dead 0" in caplog.text
    assert '"n"' not in caplog.text


async def test_a_503_is_redelivered_then_dead_lettered_after_its_retries(
        app: wh.App, recorder: Recorder, stream: Stream) -> None:
    attempts: list[int] = []

    @app.handler("flaky", retries=2, backoff=wh.backoff.constant(0.05))
    async def flaky(job: wh.Job) -> None:
        attempts.append(job.attempt)
        raise wh.JobError(503, "upstream down")

    source = source_for(stream)
    entry = await source.add({"order": 1}, {"trace": "t"})
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("flaky"), source)
        await recorder.wait(3)
    assert attempts == [1, 2, 3]
    assert [str(e.state) for e in recorder.finished] == ["retrying", "retrying", "dead"]
    dead = await stream.client.xrange(stream.dead)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"body"] == b'{"order": 1}' and fields[b"headers"] == b'{"trace": "t"}'
    assert fields[b"reason"] == b"upstream down" and fields[b"deliveries"] == b"3"
    assert fields[b"message_id"] == entry.encode()
    assert await pending(stream) == 0


async def test_a_400_is_dead_lettered_at_once(app: wh.App, recorder: Recorder,
                                              stream: Stream) -> None:
    @app.handler("strict", retries=5)
    async def strict(job: wh.Job) -> None:
        raise wh.JobError(400, "no such customer")

    source = source_for(stream)
    await source.add({"customer": 0})
    worker = wh.Worker(app, schedules=False)
    consumer = worker.consume(source, "strict")
    await worker.start()
    try:
        await recorder.wait(1)
    finally:
        await worker.stop()
    assert [e.attempt for e in recorder.finished] == [1]
    assert consumer.stats.dead == 1 and consumer.stats.nacked == 0
    assert (await stream.client.xrange(stream.dead))[0][1][b"reason"] == b"no such customer"
    assert await pending(stream) == 0


async def test_a_graceful_stop_nacks_a_stuck_message_for_the_next_consumer(
        app: wh.App, recorder: Recorder, stream: Stream) -> None:
    runs: list[int] = []
    first_run = asyncio.Event()

    @app.handler("stuck")
    async def stuck(job: wh.Job) -> None:
        runs.append(job.attempt)
        first_run.set()
        if job.attempt == 1:
            await asyncio.Event().wait()

    producer = source_for(stream)
    await producer.add({"x": 1})
    await producer.close()
    worker = wh.Worker(app, schedules=False)
    worker.consume(source_for(stream, consumer="first"), "stuck")
    await worker.start()
    await asyncio.wait_for(first_run.wait(), WAIT)
    await worker.stop(timeout=0.1)
    assert await pending(stream) == 1  # nacked: still pending, not lost

    async with wh.LocalWorker(app) as local:
        local.perform_receive(wh.Job("stuck"), source_for(stream, consumer="second"))
        await recorder.wait(2)
    assert runs == [1, 2]
    assert await pending(stream) == 0


async def test_a_killed_consumer_loses_nothing(app: wh.App, recorder: Recorder,
                                               stream: Stream, tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    deliveries: dict[str, int] = {}

    @app.handler("take")
    async def take(job: wh.Job) -> None:
        seen[job.headers["key"]] += 1
        deliveries[job.headers["key"]] = job.attempt

    source = source_for(stream, consumer="survivor")
    for n in range(10):
        await source.add({"n": n}, {"key": str(n)})
    log = tmp_path / "doomed.log"
    proc = start_consumer("redis", stream.url, stream.name, log)
    try:
        # It takes 4 (its concurrency) and hangs on them.
        await asyncio.to_thread(wait_for, lambda: len(started(log)) == 4, WAIT,
                                "the doomed consumer to start 4 messages")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        stop(proc)
    taken = {key for key, _ in started(log)}
    assert await pending(stream) == 4

    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("take"), source)
        await recorder.wait(10)
    assert seen == Counter(str(n) for n in range(10))
    assert {key for key, times in deliveries.items() if times == 2} == taken
    assert await pending(stream) == 0


async def test_the_source_reconnects_when_redis_restarts(
        app: wh.App, recorder: Recorder, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    @app.handler("note")
    async def note(job: wh.Job) -> None:
        seen.append(job.args["n"])

    server = RedisServer(tmp_path)
    server.start()
    try:
        source = RedisStreamSource(server.url, "orders", "g", claim_idle=0.5, block=0.1,
                                   reconnect_cap=0.2)
        await source.add({"n": 1})
        async with wh.LocalWorker(app) as worker:
            worker.perform_receive(wh.Job("note"), source)
            await recorder.wait(1)
            with caplog.at_level(logging.WARNING, logger="workhorse.source"):
                server.kill()
                await asyncio.to_thread(
                    wait_for, lambda: "reconnecting" in caplog.text, WAIT,
                    "the source to notice Redis went away")
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
    seen: list[int] = []

    @app.handler("note")
    async def note(job: wh.Job) -> None:
        seen.append(job.args["n"])

    source = source_for(stream)
    await source.add({"n": 1})
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("note"), source)
        await recorder.wait(1)
        with caplog.at_level(logging.WARNING, logger="workhorse.source"):
            await stream.client.delete(stream.name)
            await asyncio.to_thread(wait_for, lambda: "creating the group again" in caplog.text,
                                    WAIT, "the source to notice its group is gone")
        await stream.client.xadd(stream.name, {"body": '{"n": 2}'})
        await recorder.wait(2)
    assert seen == [1, 2]
