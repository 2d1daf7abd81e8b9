"""A store that goes away: calls fail with UNAVAILABLE, and work again once it is back."""

from __future__ import annotations

import grpc
import pytest

import workhorse as wh
from tests.faults.servers import RedisServer
from tests.grpc.conftest import bounded


async def test_a_redis_that_goes_away_is_unavailable_then_back(tmp_path, serve, connect):
    redis = RedisServer(tmp_path)
    redis.start()
    app = wh.App(redis.url)
    try:
        client = connect(await serve(app))
        job_id = await client.enqueue("add", {"a": 1})
        redis.kill()
        for call in (client.enqueue("add", {"a": 2}), client.get_job(job_id), client.stats()):
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await bounded(call)
            assert down.value.code() is grpc.StatusCode.UNAVAILABLE
        redis.start()
        assert (await bounded(client.get_job(job_id))).name == "add"
    finally:
        await app.close()
        redis.stop()
