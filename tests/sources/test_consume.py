"""The consumption runtime with an in-test source: job per message, status to settlement,
dead jobs for sources without dead letters, bounded concurrency, graceful stop, hooks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import workhorse as wh
from tests.sources.conftest import WAIT, Recorder
from tests.sources.memory_source import ListSource
from workhorse.backends.base import State
from workhorse.consume import MESSAGE_ID_HEADER, SOURCE_HEADER
from workhorse.sources.base import Source


def test_the_in_test_source_is_a_source() -> None:
    assert isinstance(ListSource([]), Source)


async def test_each_message_runs_as_a_job_of_the_handler(app: wh.App,
                                                         recorder: Recorder) -> None:
    seen: list[tuple[Any, Any, dict[str, str], int]] = []

    @app.handler("take")
    async def take(job: wh.Job) -> None:
        seen.append((job.args, job.message, dict(job.headers), job.attempt))

    source = ListSource([{"n": 1}, [1, 2], "text"], headers={"tenant": "t1"})
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("take"), source)
        await recorder.wait(3)
    assert sorted(seen, key=repr) == sorted([
        ({"n": 1}, {"n": 1}, {"tenant": "t1"}, 1),
        ({}, [1, 2], {"tenant": "t1"}, 1),
        ({}, "text", {"tenant": "t1"}, 1)], key=repr)
    assert sorted(s[0] for s in source.settled) == ["ack", "ack", "ack"]
    assert source.closed


async def test_statuses_ack_nack_and_dead_letter(app: wh.App, recorder: Recorder) -> None:
    @app.handler("judge", retries=2, backoff=wh.backoff.constant(0.01))
    async def judge(job: wh.Job) -> None:
        if job.args["status"] != 200:
            raise wh.JobError(job.args["status"], "no")
        job.ctx.status = wh.Status(job.args["status"])

    source = ListSource([{"status": 200}, {"status": 444}, {"status": 503}, {"status": 400}])
    worker = wh.Worker(app, concurrency=4, schedules=False)
    consumer = worker.consume(source, "judge")
    await worker.start()
    try:
        # 200, 444, 400 once; 503 three times (two retries).
        await recorder.wait(6)
    finally:
        await worker.stop()
    kinds = [(kind, message_id) for kind, message_id, _ in source.settled]
    assert kinds.count(("nack", "2")) == 2
    assert kinds.count(("dead_letter", "2")) == 1 and kinds.count(("dead_letter", "3")) == 1
    assert sorted(k for k in kinds if k[0] == "ack") == [
        ("ack", "0"), ("ack", "1"), ("ack", "2"), ("ack", "3")]  # dead ones acked once kept
    assert [d for k, i, d in source.settled if k == "nack"] == [0.01, 0.01]
    assert consumer.stats.received == 6 and consumer.stats.dead == 2
    assert consumer.stats.nacked == 2 and consumer.stats.acked == 4
    assert recorder.states() == {"succeeded": 2, "retrying": 2, "dead": 2}


async def test_a_source_without_dead_letters_leaves_a_dead_job_holding_the_message(
        app: wh.App, recorder: Recorder) -> None:
    @app.handler("reject", queue="inbox")
    async def reject(job: wh.Job) -> None:
        raise wh.JobError(400, "malformed order")

    source = ListSource([{"order": 7}, "not an object"], headers={"trace": "abc"})
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("reject", queue="inbox"), source)
        await recorder.wait(2)
    dead = await (await app.backend()).list_jobs(state=State.DEAD)
    assert len(dead) == 2
    by_message = {r.headers[MESSAGE_ID_HEADER]: r for r in dead}
    assert json.loads(by_message["0"].payload) == {"order": 7}
    assert json.loads(by_message["1"].payload) == {"message": "not an object"}
    for record in dead:
        assert record.name == "reject" and record.queue == "inbox"
        assert record.status == 400 and record.error == "malformed order"
        assert record.headers[SOURCE_HEADER] == "list" and record.headers["trace"] == "abc"
    # The message is acked once it is safe in the store.
    assert sorted((k, i) for k, i, _ in source.settled) == [
        ("ack", "0"), ("ack", "1"), ("dead_letter", "0"), ("dead_letter", "1")]
    await app.close()


async def test_concurrency_bounds_the_runs_in_flight(app: wh.App, recorder: Recorder) -> None:
    running = 0
    most = 0
    release = asyncio.Event()
    three_running = asyncio.Event()

    @app.handler("slow")
    async def slow(job: wh.Job) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == 3:
            three_running.set()
        await release.wait()
        running -= 1

    source = ListSource([{"n": n} for n in range(10)])
    worker = wh.Worker(app, concurrency=8, schedules=False)
    worker.consume(source, "slow", concurrency=3)
    await worker.start()
    try:
        await asyncio.wait_for(three_running.wait(), WAIT)
        assert source.queue.qsize() == 7  # no message read beyond the free slots
        release.set()
        await recorder.wait(10)
    finally:
        await worker.stop()
    assert most == 3


async def test_graceful_stop_finishes_or_nacks_the_runs_in_flight(
        app: wh.App, recorder: Recorder) -> None:
    started: list[str] = []
    both_started = asyncio.Event()

    @app.handler("work")
    async def work(job: wh.Job) -> None:
        started.append(job.args["kind"])
        if len(started) == 2:
            both_started.set()
        if job.args["kind"] == "stuck":
            await asyncio.Event().wait()  # never ends on its own
        else:
            await asyncio.sleep(0.05)

    source = ListSource([{"kind": "quick"}, {"kind": "stuck"}])
    worker = wh.Worker(app, concurrency=2, schedules=False)
    consumer = worker.consume(source, "work")
    await worker.start()
    await asyncio.wait_for(both_started.wait(), WAIT)
    await asyncio.wait_for(worker.stop(graceful=True, timeout=0.5), WAIT)
    assert sorted((k, i) for k, i, _ in source.settled) == [("ack", "0"), ("nack", "1")]
    assert source.closed
    assert consumer.stats.acked == 1 and consumer.stats.nacked == 1
    assert sorted(str(e.state) for e in recorder.finished) == ["ready", "succeeded"]


async def hanging_on_one_message(app: wh.App, **options: Any) -> tuple[wh.Worker, ListSource]:
    """A started worker (``options`` its settings) consuming one message whose run never
    ends, once that run has begun."""
    started = asyncio.Event()

    @app.handler("hang")
    async def hang(job: wh.Job) -> None:
        started.set()
        await asyncio.Event().wait()

    source = ListSource([{}])
    worker = wh.Worker(app, schedules=False, **options)
    worker.consume(source, "hang")
    await worker.start()
    await asyncio.wait_for(started.wait(), WAIT)
    return worker, source


async def test_stop_now_nacks_the_runs_in_flight_at_once(app: wh.App) -> None:
    worker, source = await hanging_on_one_message(app, grace=60.0)
    await asyncio.wait_for(worker.stop_now(), WAIT)  # no 60 s grace
    assert source.settled == [("nack", "0", 0.0)] and source.closed


async def test_stop_now_during_a_graceful_stop_ends_the_grace(app: wh.App) -> None:
    worker, source = await hanging_on_one_message(app)
    graceful = asyncio.ensure_future(worker.stop(graceful=True, timeout=60.0))
    await asyncio.sleep(0)  # let the graceful stop begin
    await asyncio.wait_for(asyncio.gather(worker.stop_now(), graceful), WAIT)
    assert source.settled == [("nack", "0", 0.0)]


async def test_a_message_delivered_more_often_than_its_retries_allow_is_dead_unrun(
        app: wh.App, recorder: Recorder) -> None:
    runs: list[int] = []

    @app.handler("poison", retries=2)
    async def poison(job: wh.Job) -> None:
        runs.append(job.attempt)

    # Three deliveries ended with their consumers dead: a fourth would be the third retry.
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("poison"), ListSource([{"a": 1}], deliveries=4))
        worker.perform_receive(wh.Job("poison"), ListSource([{"a": 2}], deliveries=3))
        await recorder.wait(2)
    assert runs == [3]
    dead = await (await app.backend()).list_jobs(state=State.DEAD)
    assert [(json.loads(r.payload), r.error, r.attempt) for r in dead] == [
        ({"a": 1}, "worker_lost", 4)]
    await app.close()


async def test_start_and_finish_hooks_see_each_run(app: wh.App) -> None:
    events: list[tuple[str, str, int]] = []
    done = asyncio.Event()

    def on_finish(event: Any) -> None:
        events.append(("finish", str(event.state), event.attempt))
        done.set()

    app.hooks(on_start=lambda e: events.append(("start", str(e.state), e.attempt)),
              on_finish=on_finish)

    @app.handler("ok")
    async def ok(job: wh.Job) -> None:
        return None

    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("ok"), ListSource([{}]))
        await asyncio.wait_for(done.wait(), WAIT)
    assert events == [("start", "running", 1), ("finish", "succeeded", 1)]


async def test_an_unknown_handler_is_refused_at_once(app: wh.App) -> None:
    worker = wh.Worker(app)
    with pytest.raises(wh.UnknownHandlerError):
        worker.consume(ListSource([]), "missing")
