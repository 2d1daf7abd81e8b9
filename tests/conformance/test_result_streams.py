"""Result streams on every backend: fan-out, the drop policies, filters and unsubscribing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import workhorse as wh
from tests.conformance.conftest import WAIT_LIMIT, wait_until
from tests.conformance.runtime import running_worker
from workhorse.results import ResultHub


async def take(subscription: wh.ResultSubscription, count: int) -> list[wh.Result]:
    """The next ``count`` results of ``subscription`` (bounded wait)."""
    got: list[wh.Result] = []
    async with asyncio.timeout(WAIT_LIMIT):
        async for result in subscription:
            got.append(result)
            if len(got) == count:
                break
    return got


def hub_of(app: wh.App) -> ResultHub | None:
    return app._result_hubs.get(asyncio.get_running_loop())


async def cancelled_jobs(app: wh.App, count: int) -> list[str]:
    """Enqueue ``count`` delayed jobs and cancel them, in order: ``count`` results."""
    refs = [await app.enqueue("task", {"i": i}, delay=60) for i in range(count)]
    ids = [ref.id for ref in refs if ref is not None]
    for job_id in ids:
        assert await app.cancel(job_id) is wh.State.CANCELLED
    return ids


@pytest.fixture
def tasks(app: wh.App) -> wh.App:
    @app.handler("task")
    async def task(job: wh.Job[Any]) -> dict[str, Any]:
        return {"doubled": 2 * job.args.get("n", 0)}

    @app.handler("refuse")
    async def refuse(job: wh.Job[Any]) -> None:
        raise wh.JobError(403, "not allowed")

    return app


async def test_two_subscribers_each_get_every_result(tasks: wh.App) -> None:
    app = tasks
    async with app.subscribe_results(10) as first, app.subscribe_results(10) as second:
        async with running_worker(app):
            ok = await app.enqueue("task", {"n": 21})
            bad = await app.enqueue("refuse", {})
            assert ok is not None and bad is not None
            first_got = await take(first, 2)
            second_got = await take(second, 2)
        [cancelled] = await cancelled_jobs(app, 1)
        first_got += await take(first, 1)
        second_got += await take(second, 1)

    assert {r.job_id for r in first_got} == {ok.id, bad.id, cancelled}
    assert first_got[2].job_id == cancelled
    assert sorted(first_got, key=lambda r: r.job_id) == sorted(second_got,
                                                               key=lambda r: r.job_id)
    by_id = {r.job_id: r for r in first_got}
    done = by_id[ok.id]
    assert (done.name, done.queue, done.state, done.status, done.result, done.error,
            done.attempt) == ("task", "default", wh.State.SUCCEEDED, wh.Status.SUCCESS,
                              {"doubled": 42}, None, 1)
    assert done.ok and done.finished_at is not None and done.finished_at > 0
    assert done.status is wh.Status.SUCCESS
    dead = by_id[bad.id]
    assert (dead.state, dead.status, dead.error, dead.result, dead.ok) == (
        wh.State.DEAD, wh.Status.FORBIDDEN, "not allowed", None, False)
    gone = by_id[cancelled]
    assert (gone.state, gone.status, gone.error, gone.attempt) == (
        wh.State.CANCELLED, wh.Status.CANCELLED, "cancelled", 0)


async def test_results_finished_before_subscribing_are_not_told(tasks: wh.App) -> None:
    app = tasks
    await cancelled_jobs(app, 2)
    async with app.subscribe_results(10) as subscription:
        [later] = await cancelled_jobs(app, 1)
        [result] = await take(subscription, 1)
    assert result.job_id == later


@pytest.mark.parametrize("drop", [wh.Drop.NEWEST, wh.Drop.OLDEST])
async def test_a_full_buffer_drops_by_its_policy_and_counts_it(
    tasks: wh.App, drop: wh.Drop, caplog: pytest.LogCaptureFixture,
) -> None:
    app = tasks
    caplog.set_level(logging.WARNING, logger="workhorse.results")
    async with app.subscribe_results(2, drop) as small, \
            app.subscribe_results(100) as witness:
        ids = await cancelled_jobs(app, 5)
        # The hub offers each result to every subscription before the next: once the
        # witness has all five, the small buffer has seen all five too.
        assert [r.job_id for r in await take(witness, 5)] == ids
        assert small.dropped == 3
        assert witness.dropped == 0
        kept = [r.job_id for r in await take(small, 2)]
        assert kept == (ids[:2] if drop is wh.Drop.NEWEST else ids[3:])
        # Room again: the next result is buffered, not dropped.
        [more] = await cancelled_jobs(app, 1)
        assert [r.job_id for r in await take(small, 1)] == [more]
        assert small.dropped == 3
    drops = [r for r in caplog.records if "result subscription" in r.getMessage()]
    assert len(drops) == 1  # at most one line a second
    assert "dropped 1" in drops[0].getMessage()


async def test_filters_keep_only_the_jobs_asked_for(tasks: wh.App) -> None:
    app = tasks

    @app.handler("other")
    async def other(job: wh.Job[Any]) -> None:
        return None

    async with app.subscribe_results(10, job_ids=[]) as nothing, \
            app.subscribe_results(10, names=["other"]) as by_name, \
            app.subscribe_results(10) as everything:
        first, second = await cancelled_jobs(app, 2)
        await take(everything, 2)
        async with app.subscribe_results(10, job_ids=[second]) as by_id:
            ref = await app.enqueue("other", delay=60)
            assert ref is not None
            await app.cancel(ref.id)
            assert await app.cancel(first) is wh.State.CANCELLED  # finished: no result again
            await take(everything, 1)
            [named] = await take(by_name, 1)
            assert named.job_id == ref.id
            assert by_id.dropped == 0 and nothing.dropped == 0
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await take(by_id, 1)  # `second` finished before by_id subscribed


async def test_unsubscribing_frees_the_buffer_and_the_last_stops_the_listener(
    tasks: wh.App, backend_url: str,
) -> None:
    app = tasks
    first = app.subscribe_results(10)
    second = app.subscribe_results(10, drop=wh.Drop.OLDEST)
    await first.start()
    await second.start()
    hub = hub_of(app)
    assert hub is not None and hub.feed is not None
    feed = hub.feed
    assert feed.active
    await listeners_are(backend_url, feed, 1)

    await cancelled_jobs(app, 1)
    await take(second, 1)
    await first.close()  # with its result unread: freed
    assert first.closed and hub.subscriptions == [second]
    assert [r async for r in first] == []
    assert feed.active  # `second` still listens
    [later] = await cancelled_jobs(app, 1)
    assert [r.job_id for r in await take(second, 1)] == [later]

    await second.close()
    assert not feed.active
    assert hub.feed is None and hub_of(app) is None
    await listeners_are(backend_url, feed, 0)
    await second.close()  # idempotent

    # A new subscription listens again, from its own start.
    await cancelled_jobs(app, 1)
    async with app.subscribe_results(10) as third:
        [last] = await cancelled_jobs(app, 1)
        assert [r.job_id for r in await take(third, 1)] == [last]
    assert hub_of(app) is None


async def test_closing_the_app_ends_its_subscriptions(tasks: wh.App) -> None:
    app = tasks
    subscription = app.subscribe_results(10)
    await subscription.start()
    await app.close()
    assert subscription.closed
    assert [r async for r in subscription] == []
    assert hub_of(app) is None


async def test_a_subscription_rejects_an_empty_buffer(tasks: wh.App) -> None:
    with pytest.raises(ValueError):
        tasks.subscribe_results(0)


async def listeners_are(url: str, feed: object, count: int) -> None:
    """The store's own view of the feed's listener: a Redis subscriber on its channel, a
    PostgreSQL session LISTENing; memory and SQLite hold no such thing."""
    if url.startswith("redis"):
        import redis.asyncio as aioredis

        channel: str = feed.channel  # type: ignore[attr-defined]
        client = aioredis.Redis.from_url(url.split("?")[0])
        try:
            async def subscribed() -> bool:
                [(_, n)] = await client.pubsub_numsub(channel)
                return int(n) == count

            await wait_until(subscribed, what=f"{count} subscriber(s) of {channel}")
        finally:
            await client.aclose()
    elif url.startswith("postgres"):
        conn = feed.connection  # type: ignore[attr-defined]
        assert (conn is not None and not conn.closed) == (count == 1)


@pytest.mark.parametrize("size", [100, 40_000])
async def test_small_and_large_results_arrive_whole(tasks: wh.App, size: int) -> None:
    # 40 000 is past what a NOTIFY carries (8000 bytes) and what a Redis message inlines
    # (64 KiB, 80 000 bytes here): the feed reads the job instead.
    app = tasks
    text = "é" * size + "\"\\/"

    @app.handler("large")
    async def large(job: wh.Job[Any]) -> dict[str, str]:
        return {"text": text}

    async with app.subscribe_results(10) as subscription, running_worker(app):
        ref = await app.enqueue("large")
        [result] = await take(subscription, 1)
    assert ref is not None and result.job_id == ref.id
    assert result.result == {"text": text}
