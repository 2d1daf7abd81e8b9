"""NatsJetStreamSource against the real NATS server: through Worker.consume and LocalWorker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

import workhorse as wh
from tests.sources.brokers import (
    NATS_URL,
    NatsNames,
    NatsServer,
    dead_messages,
    drop_streams,
    jetstream,
    publish_json,
)
from tests.sources.conftest import Recorder
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
    record_notes,
    record_takes,
    until_logged,
)
from workhorse.sources.nats_jetstream import DEAD_REASON_HEADER, NatsJetStreamSource


@pytest.fixture
async def names() -> AsyncIterator[NatsNames]:
    fresh = NatsNames.fresh()
    yield fresh
    async with jetstream() as js:
        await drop_streams(js, fresh)


@pytest.fixture
async def js(names: NatsNames) -> AsyncIterator[Any]:
    """A JetStream context with the test's stream created."""
    async with jetstream() as context:
        await context.add_stream(name=names.stream, subjects=[names.subject])
        yield context


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
    seen = count_each(app)
    for n in range(30):
        await publish_json(js, names.subject, {"n": n})
    source = source_for(names)
    consumer = await consume_counted(app, recorder, source, 30)
    assert_each_acked_once(seen, consumer, 30)
    assert source.settled == {"ack": 30, "nack": 0, "dead_letter": 0}
    assert await outstanding(js, names) == (0, 0)


async def test_a_503_is_redelivered_then_dead_lettered_after_its_retries(
        app: wh.App, recorder: Recorder, names: NatsNames, js: Any) -> None:
    attempts = fail_503(app)
    await publish_json(js, names.subject, {"order": 1}, {"trace": "t"})
    await receive_until(app, recorder, source_for(names), "flaky", 3)
    assert_retried_then_dead(attempts, recorder)
    [dead] = await dead_messages(js, names)
    assert dead.data == b'{"order": 1}' and dead.headers["trace"] == "t"
    assert dead.headers[DEAD_REASON_HEADER] == "upstream down"
    assert dead.headers["Workhorse-Deliveries"] == "3"
    assert await outstanding(js, names) == (0, 0)


async def test_a_400_is_dead_lettered_at_once(app: wh.App, recorder: Recorder,
                                              names: NatsNames, js: Any) -> None:
    fail_400(app, "no such customer", retries=5)
    await publish_json(js, names.subject, {"customer": 0})
    consumer = await consume_until(app, recorder, source_for(names), "strict", 1)
    assert_dead_at_first_attempt(recorder, consumer)
    [dead] = await dead_messages(js, names)
    assert dead.headers[DEAD_REASON_HEADER] == "no such customer"
    assert await outstanding(js, names) == (0, 0)


async def test_without_a_dead_subject_the_message_becomes_a_workhorse_dead_job(
        app: wh.App, recorder: Recorder, names: NatsNames, js: Any) -> None:
    fail_400(app, "malformed")
    await publish_json(js, names.subject, {"customer": 7})
    await receive_until(app, recorder, source_for(names, dead_subject=None), "strict", 1)
    await assert_kept_as_dead_job(app, {"customer": 7})
    assert await outstanding(js, names) == (0, 0)


async def test_a_killed_consumer_loses_nothing(app: wh.App, recorder: Recorder,
                                               names: NatsNames, js: Any,
                                               tmp_path: Path) -> None:
    takes = record_takes(app)
    for n in range(10):
        await publish_json(js, names.subject, {"n": n}, {"key": str(n)})
    taken = await kill_a_consumer_holding(4, "nats", NATS_URL, names.stream,
                                          tmp_path / "doomed.log", subject=names.subject)
    assert (await outstanding(js, names))[1] == 4

    # The same durable consumer: the 4 come back once their ack_wait (1 s) runs out.
    await receive_until(app, recorder, source_for(names), "take", 10)
    takes.assert_each_ran_once_and_only_taken_ones_twice_delivered(10, taken)
    assert await outstanding(js, names) == (0, 0)


async def test_the_source_reconnects_when_nats_restarts(
        app: wh.App, recorder: Recorder, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    seen = record_notes(app)
    server = NatsServer(tmp_path)
    server.start()
    names = NatsNames.fresh()
    try:
        async with jetstream(server.url) as js:
            await js.add_stream(name=names.stream, subjects=[names.subject])
            await publish_json(js, names.subject, {"n": 1})
        source = source_for(names, server.url, reconnect_cap=0.2)
        async with receiving(app, source, "note"):
            await recorder.wait(1)
            with caplog.at_level(logging.WARNING, logger="workhorse.sources.nats"):
                server.kill()
                await until_logged(caplog, "disconnected", "the source to notice NATS went away")
                server.start()
                async with jetstream(server.url) as js:
                    await publish_json(js, names.subject, {"n": 2})
                await recorder.wait(2)
        assert seen == [1, 2]
    finally:
        server.stop()


async def test_a_graceful_stop_nacks_a_stuck_message_for_the_next_consumer(
        app: wh.App, recorder: Recorder, names: NatsNames, js: Any) -> None:
    stuck = Stuck.register(app)
    await publish_json(js, names.subject, {"x": 1})
    # An ack_wait longer than the wait below: the message must come back by the nack.
    await stuck.stop_while_stuck(app, source_for(names, ack_wait=60.0))
    await receive_until(app, recorder, source_for(names, ack_wait=60.0), "stuck", 2)
    # nats-server 2.9 may report the redelivery as delivery 1 (see the source's docstring).
    assert len(stuck.runs) == 2 and stuck.runs[0] == 1
    assert await outstanding(js, names) == (0, 0)


async def test_a_deleted_stream_and_consumer_are_created_again(
        app: wh.App, recorder: Recorder, names: NatsNames, js: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    seen = record_notes(app)
    await publish_json(js, names.subject, {"n": 1})
    source = source_for(names, reconnect_cap=0.2, check_interval=0.2)
    async with receiving(app, source, "note"):
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
