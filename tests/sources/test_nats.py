"""NatsJetStreamSource against the real NATS server: through Worker.consume and LocalWorker."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

import workhorse as wh
from tests.faults.procs import stop, wait_for
from tests.sources.brokers import (
    NATS_URL,
    NatsNames,
    NatsServer,
    dead_messages,
    drop_streams,
    eventually,
    nats_client,
    publish_json,
    start_broker_consumer,
)
from tests.sources.conftest import WAIT, Recorder
from tests.sources.procs import started
from workhorse.sources.nats_jetstream import DEAD_REASON_HEADER, NatsJetStreamSource


@pytest.fixture
async def names() -> AsyncIterator[NatsNames]:
    fresh = NatsNames.fresh()
    yield fresh
    nc, js = await nats_client()
    try:
        await drop_streams(js, fresh)
    finally:
        await nc.close()


@pytest.fixture
async def js(names: NatsNames) -> AsyncIterator[Any]:
    """A JetStream context with the test's stream created."""
    nc, context = await nats_client()
    await context.add_stream(name=names.stream, subjects=[names.subject])
    yield context
    await nc.close()


def source_for(names: NatsNames, url: str = NATS_URL, **options: Any) -> NatsJetStreamSource:
    settings: dict[str, Any] = {"dead_subject": names.dead_subject, "ack_wait": 5.0, **options}
    return NatsJetStreamSource(url, stream=names.stream, subject=names.subject,
                               durable=names.durable, **settings)


async def outstanding(js: Any, names: NatsNames) -> tuple[int, int]:
    """(messages not yet delivered, deliveries not yet acked) of the test's consumer."""
    info = await js.consumer_info(names.stream, names.durable)
    return info.num_pending, info.num_ack_pending


async def test_every_message_is_handled_and_acked_once(app: wh.App, recorder: Recorder,
                                                       names: NatsNames, js: Any) -> None:
    seen: Counter[int] = Counter()

    @app.handler("count")
    async def count(job: wh.Job) -> None:
        seen[job.args["n"]] += 1

    for n in range(30):
        await publish_json(js, names.subject, {"n": n})
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
    assert await outstanding(js, names) == (0, 0)


async def test_a_503_is_redelivered_then_dead_lettered_after_its_retries(
        app: wh.App, recorder: Recorder, names: NatsNames, js: Any) -> None:
    attempts: list[int] = []

    @app.handler("flaky", retries=2, backoff=wh.backoff.constant(0.05))
    async def flaky(job: wh.Job) -> None:
        attempts.append(job.attempt)
        raise wh.JobError(503, "upstream down")

    await publish_json(js, names.subject, {"order": 1}, {"trace": "t"})
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("flaky"), source_for(names))
        await recorder.wait(3)
    assert attempts == [1, 2, 3]
    assert [str(e.state) for e in recorder.finished] == ["retrying", "retrying", "dead"]
    [dead] = await dead_messages(js, names)
    assert dead.data == b'{"order": 1}' and dead.headers["trace"] == "t"
    assert dead.headers[DEAD_REASON_HEADER] == "upstream down"
    assert dead.headers["Workhorse-Deliveries"] == "3"
    assert await outstanding(js, names) == (0, 0)


async def test_a_400_is_dead_lettered_at_once(app: wh.App, recorder: Recorder,
                                              names: NatsNames, js: Any) -> None:
    @app.handler("strict", retries=5)
    async def strict(job: wh.Job) -> None:
        raise wh.JobError(400, "no such customer")

    await publish_json(js, names.subject, {"customer": 0})
    worker = wh.Worker(app, schedules=False)
    consumer = worker.consume(source_for(names), "strict")
    await worker.start()
    try:
        await recorder.wait(1)
    finally:
        await worker.stop()
    assert [e.attempt for e in recorder.finished] == [1]
    assert consumer.stats.dead == 1 and consumer.stats.nacked == 0
    [dead] = await dead_messages(js, names)
    assert dead.headers[DEAD_REASON_HEADER] == "no such customer"
    assert await outstanding(js, names) == (0, 0)


async def test_without_a_dead_subject_the_message_becomes_a_workhorse_dead_job(
        app: wh.App, recorder: Recorder, names: NatsNames, js: Any) -> None:
    @app.handler("strict")
    async def strict(job: wh.Job) -> None:
        raise wh.JobError(400, "malformed")

    await publish_json(js, names.subject, {"customer": 7})
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("strict"), source_for(names, dead_subject=None))
        await recorder.wait(1)
    [job] = (await app.admin.jobs(state="dead")).items
    assert job.args == {"customer": 7}
    assert await outstanding(js, names) == (0, 0)


async def test_a_killed_consumer_loses_nothing(app: wh.App, recorder: Recorder,
                                               names: NatsNames, js: Any,
                                               tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    deliveries: dict[str, int] = {}

    @app.handler("take")
    async def take(job: wh.Job) -> None:
        seen[job.headers["key"]] += 1
        deliveries[job.headers["key"]] = job.attempt

    for n in range(10):
        await publish_json(js, names.subject, {"n": n}, {"key": str(n)})
    log = tmp_path / "doomed.log"
    proc = start_broker_consumer("nats", NATS_URL, names.stream, names.subject, log)
    try:
        # It takes 4 (its concurrency) and hangs on them.
        await asyncio.to_thread(wait_for, lambda: len(started(log)) == 4, WAIT,
                                "the doomed consumer to start 4 messages")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        stop(proc)
    taken = {key for key, _ in started(log)}
    assert (await outstanding(js, names))[1] == 4

    # The same durable consumer: the 4 come back once their ack_wait (1 s) runs out.
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("take"), source_for(names))
        await recorder.wait(10)
    assert seen == Counter(str(n) for n in range(10))
    assert {key for key, times in deliveries.items() if times == 2} == taken
    assert await outstanding(js, names) == (0, 0)


async def test_the_source_reconnects_when_nats_restarts(
        app: wh.App, recorder: Recorder, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    @app.handler("note")
    async def note(job: wh.Job) -> None:
        seen.append(job.args["n"])

    server = NatsServer(tmp_path)
    server.start()
    names = NatsNames.fresh()
    try:
        nc, js = await nats_client(server.url)
        await js.add_stream(name=names.stream, subjects=[names.subject])
        await publish_json(js, names.subject, {"n": 1})
        await nc.close()
        source = source_for(names, server.url, reconnect_cap=0.2)
        async with wh.LocalWorker(app) as worker:
            worker.perform_receive(wh.Job("note"), source)
            await recorder.wait(1)
            with caplog.at_level(logging.WARNING, logger="workhorse.sources.nats"):
                server.kill()
                await asyncio.to_thread(
                    wait_for, lambda: "disconnected" in caplog.text, WAIT,
                    "the source to notice NATS went away")
                server.start()
                nc, js = await nats_client(server.url)
                await publish_json(js, names.subject, {"n": 2})
                await nc.close()
                await recorder.wait(2)
        assert seen == [1, 2]
    finally:
        server.stop()


async def test_a_graceful_stop_nacks_a_stuck_message_for_the_next_consumer(
        app: wh.App, recorder: Recorder, names: NatsNames, js: Any) -> None:
    runs: list[int] = []
    first_run = asyncio.Event()

    @app.handler("stuck")
    async def stuck(job: wh.Job) -> None:
        runs.append(job.attempt)
        first_run.set()
        if len(runs) == 1:
            await asyncio.Event().wait()

    await publish_json(js, names.subject, {"x": 1})
    # An ack_wait longer than the wait below: the message must come back by the nack.
    worker = wh.Worker(app, schedules=False)
    worker.consume(source_for(names, ack_wait=60.0), "stuck")
    await worker.start()
    await asyncio.wait_for(first_run.wait(), WAIT)
    await worker.stop(timeout=0.1)

    async with wh.LocalWorker(app) as local:
        local.perform_receive(wh.Job("stuck"), source_for(names, ack_wait=60.0))
        await recorder.wait(2)
    # nats-server 2.9 may report the redelivery as delivery 1 (see the source's docstring).
    assert len(runs) == 2 and runs[0] == 1
    assert await outstanding(js, names) == (0, 0)


async def test_a_deleted_stream_and_consumer_are_created_again(
        app: wh.App, recorder: Recorder, names: NatsNames, js: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    @app.handler("note")
    async def note(job: wh.Job) -> None:
        seen.append(job.args["n"])

    await publish_json(js, names.subject, {"n": 1})
    source = source_for(names, reconnect_cap=0.2, check_interval=0.2)
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("note"), source)
        await recorder.wait(1)
        with caplog.at_level(logging.WARNING, logger="workhorse.sources.nats"):
            await js.delete_stream(names.stream)
            await eventually(lambda: _stream_exists(js, names.stream),
                             "the source to create the stream again")
        await publish_json(js, names.subject, {"n": 2})
        await recorder.wait(2)
    assert seen == [1, 2]
    assert f"consumer workers of {names.stream} is gone" in caplog.text


async def _stream_exists(js: Any, stream: str) -> bool:
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return False
    return True
