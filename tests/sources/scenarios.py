"""The scenarios every source's tests run, written once: handlers that record what they
saw, runs of a Worker or LocalWorker until some runs finished, and the checks each scenario
ends with. What differs per source (how messages get in, what is left on the server) stays
in its test module."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import workhorse as wh
from tests.sources.conftest import WAIT, Recorder
from workhorse.consume import Consumer
from workhorse.sources.base import Source

# -- waiting ---------------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = WAIT) -> None:
    """Poll ``check`` (a server's state; there is no event to await) until it holds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def until_logged(caplog: pytest.LogCaptureFixture, text: str, what: str) -> None:
    """Until ``text`` was logged (a source reports a lost server only in its log)."""
    async def logged() -> bool:
        return text in caplog.text
    await eventually(logged, what)


# -- runs ------------------------------------------------------------------------------------


async def consume_until(app: wh.App, recorder: Recorder, source: Source, handler: str,
                        runs: int, *, worker_concurrency: int = 10,
                        concurrency: int | None = None) -> Consumer:
    """``Worker.consume(source, handler)`` until ``runs`` runs finished, then stop; the
    consumer, for its stats."""
    worker = wh.Worker(app, concurrency=worker_concurrency, schedules=False)
    consumer = worker.consume(source, handler, concurrency=concurrency)
    await worker.start()
    try:
        await recorder.wait(runs)
    finally:
        await worker.stop()
    return consumer


@contextlib.asynccontextmanager
async def receiving(app: wh.App, source: Source, handler: str) -> AsyncIterator[None]:
    """``LocalWorker.perform_receive(Job(handler), source)`` for the body of the block."""
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job(handler), source)
        yield


async def receive_until(app: wh.App, recorder: Recorder, source: Source, handler: str,
                        runs: int) -> None:
    """``LocalWorker.perform_receive(Job(handler), source)`` until ``runs`` runs finished."""
    async with receiving(app, source, handler):
        await recorder.wait(runs)


# -- every message handled and acked once ----------------------------------------------------


def count_each(app: wh.App) -> Counter[int]:
    """Handler ``count``: how many times each message ran, by its ``n``."""
    seen: Counter[int] = Counter()

    @app.handler("count")
    async def count(job: wh.Job) -> None:
        seen[job.args["n"]] += 1

    return seen


async def consume_counted(app: wh.App, recorder: Recorder, source: Source,
                          messages: int) -> Consumer:
    """Run ``count`` over ``messages`` messages with 4 worker threads and 5 at once."""
    return await consume_until(app, recorder, source, "count", messages,
                               worker_concurrency=4, concurrency=5)


def assert_each_acked_once(seen: Counter[int], consumer: Consumer, messages: int) -> None:
    assert seen == Counter(range(messages))
    assert consumer.stats.received == messages and consumer.stats.acked == messages


# -- a 503 redelivered, then dead; a 400 dead at once ------------------------------------------


def fail_503(app: wh.App) -> list[int]:
    """Handler ``flaky`` (2 retries, 0.05 s apart) fails every run with 503 "upstream down";
    the attempts it saw."""
    attempts: list[int] = []

    @app.handler("flaky", retries=2, backoff=wh.backoff.constant(0.05))
    async def flaky(job: wh.Job) -> None:
        attempts.append(job.attempt)
        raise wh.JobError(503, "upstream down")

    return attempts


def assert_retried_then_dead(attempts: list[int], recorder: Recorder) -> None:
    assert attempts == [1, 2, 3]
    assert [str(e.state) for e in recorder.finished] == ["retrying", "retrying", "dead"]


def fail_400(app: wh.App, reason: str, **options: Any) -> None:
    """Handler ``strict`` fails every run with 400 ``reason``."""
    @app.handler("strict", **options)
    async def strict(job: wh.Job) -> None:
        raise wh.JobError(400, reason)


def assert_dead_at_first_attempt(recorder: Recorder, consumer: Consumer) -> None:
    assert [e.attempt for e in recorder.finished] == [1]
    assert consumer.stats.dead == 1 and consumer.stats.nacked == 0


async def assert_kept_as_dead_job(app: wh.App, args: dict[str, Any]) -> None:
    """The only dead job of ``app`` holds a message whose body is ``args``."""
    [job] = (await app.admin.jobs(state="dead")).items
    assert job.args == args


# -- a killed consumer loses nothing -------------------------------------------------------


@dataclasses.dataclass
class Takes:
    """What handler ``take`` saw, by each message's ``key`` header: how many runs, and the
    delivery count of the last."""

    seen: Counter[str] = dataclasses.field(default_factory=Counter)
    deliveries: dict[str, int] = dataclasses.field(default_factory=dict)

    def assert_each_ran_once_and_only_taken_ones_twice_delivered(self, messages: int,
                                                               taken: set[str]) -> None:
        assert self.seen == Counter(str(n) for n in range(messages))
        assert {key for key, times in self.deliveries.items() if times == 2} == taken


def record_takes(app: wh.App) -> Takes:
    """Handler ``take``, recording into the Takes returned."""
    takes = Takes()

    @app.handler("take")
    async def take(job: wh.Job) -> None:
        takes.seen[job.headers["key"]] += 1
        takes.deliveries[job.headers["key"]] = job.attempt

    return takes


# -- reconnects ------------------------------------------------------------------------------


def record_notes(app: wh.App) -> list[int]:
    """Handler ``note``: the ``n`` of each message, in the order they ran."""
    seen: list[int] = []

    @app.handler("note")
    async def note(job: wh.Job) -> None:
        seen.append(job.args["n"])

    return seen


# -- a graceful stop nacks a stuck message -------------------------------------------------


@dataclasses.dataclass
class Stuck:
    """Handler ``stuck``: its first run never ends; ``runs`` holds the attempt of each run."""

    runs: list[int] = dataclasses.field(default_factory=list)
    first_run: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @classmethod
    def register(cls, app: wh.App) -> Stuck:
        stuck = cls()

        @app.handler("stuck")
        async def hang_first(job: wh.Job) -> None:
            stuck.runs.append(job.attempt)
            stuck.first_run.set()
            if len(stuck.runs) == 1:
                await asyncio.Event().wait()

        return stuck

    async def stop_while_stuck(self, app: wh.App, source: Source) -> None:
        """Consume ``source`` until the first run started, then stop with 0.1 s of grace:
        the stuck run is cancelled and its message nacked."""
        worker = wh.Worker(app, schedules=False)
        worker.consume(source, "stuck")
        await worker.start()
        await asyncio.wait_for(self.first_run.wait(), WAIT)
        await worker.stop(timeout=0.1)
