"""Result streams across processes: a `workhorse worker` process finishes the jobs, and the
subscriptions of this process are told, on every durable store."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

import workhorse as wh
from tests.conformance.conftest import BACKENDS, cleanup

from .procs import start_skewed_worker, start_worker, stop
from .servers import PostgresServer, RedisServer

DURABLE = ["sqlite", "redis", "postgresql"]


@pytest.mark.parametrize("kind", DURABLE)
async def test_a_worker_in_another_process_reaches_every_subscriber(
    kind: str, tmp_path: Path,
) -> None:
    url = BACKENDS[kind](tmp_path)
    app = wh.App(url)
    worker = None
    try:
        async with app.subscribe_results(100) as first, \
                app.subscribe_results(2, drop=wh.Drop.OLDEST) as small:
            worker = start_worker(url, tmp_path / "attempts.log", "-c", "4",
                                  app="app_results:app")
            refs = await app.enqueue_many(
                [wh.EnqueueRequest("square", {"n": n}) for n in range(6)]
                + [wh.EnqueueRequest("refuse", {"n": 6})])
            ids = {ref.id for ref in refs if ref is not None}
            got: dict[str, wh.Result] = {}
            async with asyncio.timeout(30):  # includes the worker's start-up
                async for result in first:
                    got[result.job_id] = result
                    if len(got) == len(ids):
                        break
            assert set(got) == ids
            squares = sorted(r.result["square"] for r in got.values() if r.ok)
            assert squares == [n * n for n in range(6)]
            [dead] = [r for r in got.values() if not r.ok]
            assert (dead.state, dead.status, dead.error) == (
                wh.State.DEAD, wh.Status.FORBIDDEN, "refused 6")
            assert small.dropped == 5
    finally:
        if worker is not None:
            stop(worker)
        await app.close()
        await cleanup(url)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:9/0",
                                 "postgresql://postgres@127.0.0.1:9/test?connect_timeout=2"])
async def test_subscribing_to_a_store_that_is_away_fails_clearly(url: str) -> None:
    app = wh.App(url)
    try:
        with pytest.raises(wh.StoreError):
            async with app.subscribe_results(10):
                pass
        assert not app._result_hubs  # nothing left listening or retrying
    finally:
        await app.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "postgresql"])
async def test_a_subscription_listens_again_after_its_store_restarts(
    kind: str, tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path) if kind == "redis" else PostgresServer()
    await asyncio.to_thread(server.start)
    app = wh.App(server.url)
    app.register("t", lambda job: None)

    async def finish_one() -> str:
        ref = await app.enqueue("t", delay=60)
        assert ref is not None
        await app.cancel(ref.id)
        return ref.id

    try:
        async with app.subscribe_results(100) as subscription:
            job_id = await finish_one()
            async with asyncio.timeout(10):
                assert (await anext(subscription)).job_id == job_id
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            # What finishes while the listener reconnects is missed (best effort): finish
            # jobs until one is told again.
            async with asyncio.timeout(30):
                while True:
                    try:
                        job_id = await finish_one()
                    except wh.StoreError:  # the app's own connections come back too
                        await asyncio.sleep(0.1)
                        continue
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            if (await anext(subscription)).job_id == job_id:
                                break
            assert not subscription.closed and subscription.dropped == 0
    finally:
        await app.close()
        await asyncio.to_thread(
            server.stop if isinstance(server, RedisServer) else server.cleanup)


@pytest.mark.parametrize("skew", [3.0, -0.5])
async def test_sqlite_tells_the_finishes_of_a_worker_whose_clock_is_off(
    skew: float, tmp_path: Path,
) -> None:
    # SQLite's feed follows finish times: a worker ahead must not carry the cursor past the
    # finishes of the others, and one a little behind (within the lookback) is still seen.
    url = BACKENDS["sqlite"](tmp_path)
    app = wh.App(url)
    app.register("t", lambda job: None)
    worker = None
    try:
        async with app.subscribe_results(100) as subscription:
            worker = start_skewed_worker(url, tmp_path / "attempts.log", skew,
                                         app="app_results:app")
            ref = await app.enqueue("square", {"n": 3})
            assert ref is not None
            async with asyncio.timeout(30):
                told = await anext(subscription)
            assert (told.job_id, told.result) == (ref.id, {"square": 9})
            later = await app.enqueue("t", delay=60)
            assert later is not None
            await app.cancel(later.id)
            async with asyncio.timeout(5):
                assert (await anext(subscription)).job_id == later.id
    finally:
        if worker is not None:
            stop(worker)
        await app.close()
