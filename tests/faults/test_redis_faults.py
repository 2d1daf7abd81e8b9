"""Faults on Redis with real worker processes and a redis-server of the test's own."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

import workhorse as wh

from .procs import count_state, enqueue_work, read_log, start_worker, states, stop, wait_for
from .servers import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()





def test_sigkill_one_of_two_workers_with_500_jobs_in_flight(redis_server, tmp_path):
    url, log = redis_server.url, tmp_path / "attempts.log"
    ids = asyncio.run(enqueue_work(url, 500, 0.2))
    workers = [start_worker(url, log, "-c", "50", "--lease", "2") for _ in range(2)]
    try:
        wait_for(lambda: len({e.pid for e in read_log(log)}) == 2
                 and len(read_log(log)) >= 150, 60, "both workers to be busy")
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        wait_for(lambda: count_state(url, wh.State.SUCCEEDED) == 500, 120, "all 500 jobs")
    finally:
        for proc in workers:
            stop(proc)
    entries = read_log(log)
    ended = Counter(e.job_id for e in entries if e.kind == "end")
    missing = set(ids) - set(ended)
    duplicates = sum(n - 1 for n in ended.values() if n > 1)
    rerun = {e.job_id for e in entries if e.kind == "start" and e.attempt > 1}
    print(f"\nredis SIGKILL, 500 jobs: missing={len(missing)} duplicate completions="
          f"{duplicates} restarted={len(rerun)}")
    assert missing == set()
    assert rerun, "the kill should have interrupted jobs in flight"


def test_redis_restart_mid_run_loses_no_acknowledged_job(redis_server, tmp_path):
    url, log = redis_server.url, tmp_path / "attempts.log"
    acknowledged = asyncio.run(enqueue_work(url, 300, 0.01))
    worker = start_worker(url, log, "-c", "10")
    try:
        wait_for(lambda: len(read_log(log)) >= 50, 60, "the worker to get going")
        redis_server.stop()
        redis_server.start()  # AOF with appendfsync always: every acknowledged write is back
        acknowledged += asyncio.run(enqueue_work(url, 100, 0.0))
        wait_for(lambda: count_state(url, wh.State.SUCCEEDED) == 400, 120,
                 "every acknowledged job to finish after the restart")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    ended = {e.job_id for e in read_log(log) if e.kind == "end"}
    assert set(acknowledged) <= ended
    assert worker.returncode == 0


def test_unreachable_redis_fails_enqueue_promptly_and_writes_nothing(redis_server):
    url = redis_server.url
    redis_server.stop()

    async def attempt() -> float:
        app = wh.App(url)
        app.register("work", lambda job: None)
        started = time.monotonic()
        try:
            with pytest.raises(wh.StoreError):
                await app.enqueue("work", {"n": 1})
        finally:
            await app.close()
        return time.monotonic() - started

    waited = asyncio.run(attempt())
    print(f"\nenqueue to an unreachable Redis failed after {waited:.2f}s")
    assert waited < 30  # bounded: it fails rather than hanging
    redis_server.start()
    assert sum(asyncio.run(states(url)).values()) == 0


def test_garbage_in_a_ready_queue_goes_dead_and_the_worker_keeps_going(redis_server, tmp_path):
    import redis

    url, log = redis_server.url, tmp_path / "attempts.log"
    asyncio.run(enqueue_work(url, 1, 0.0))
    client = redis.Redis.from_url(url)
    try:
        queue_keys = [k for k in client.scan_iter(match="{workhorse}:queue:*")]
        assert queue_keys, "the ready queue key should exist"
        client.zadd(queue_keys[0], {b"\xffnot-a-job": 0})
    finally:
        client.close()
    later = asyncio.run(enqueue_work(url, 5, 0.0))
    worker = start_worker(url, log, "-c", "4")
    try:
        wait_for(lambda: count_state(url, wh.State.SUCCEEDED) == 6, 60, "the good jobs")
        wait_for(lambda: count_state(url, wh.State.DEAD) == 1, 60, "the garbage to die")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)

    async def dead() -> wh.backends.base.JobRecord:
        app = wh.App(url)
        try:
            [record] = await (await app.backend()).list_jobs(state=wh.State.DEAD)
            return record
        finally:
            await app.close()

    record = asyncio.run(dead())
    assert record.status == 400
    assert "garbage" in record.error
    assert len(later) == 5
    assert worker.returncode == 0


def test_ticks_are_enqueued_once_across_three_worker_processes(redis_server, tmp_path):
    url, log = redis_server.url, tmp_path / "attempts.log"
    workers = [start_worker(url, log, "-c", "4", extra_env={"FAULT_TICKS": "1"})
               for _ in range(3)]
    try:
        wait_for(lambda: len({e.job_id for e in read_log(log)
                              if e.kind == "end" and e.attempt == 1}) >= 4, 60, "four ticks")
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(timeout=30)

    async def ticks() -> Counter:
        app = wh.App(url)
        try:
            jobs = await (await app.backend()).list_jobs(name="tick", limit=1000)
            return Counter(round(j.run_at, 3) for j in jobs)
        finally:
            await app.close()

    per_tick = asyncio.run(ticks())
    print(f"\nthree workers, every=0.5s: {len(per_tick)} ticks, jobs per tick "
          f"{sorted(set(per_tick.values()))}")
    assert len(per_tick) >= 4
    assert set(per_tick.values()) == {1}
