"""What is particular to the redis backend: its URL, key layout, waiting, garbage, expiry,
event loops and connections. Talks to the Redis server of $WORKHORSE_TEST_REDIS_URL (default:
the local one); every test has a namespace of its own, deleted afterwards.

The semantics every backend shares are in ``tests/conformance``.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot

import workhorse as wh
from workhorse import codec
from workhorse.backends import create_backend
from workhorse.backends.base import (
    EnqueueOutcome,
    Handoff,
    JobRecord,
    Limits,
    NewJob,
    State,
    WorkerInfo,
)
from workhorse.backends.redis import RedisBackend
from workhorse.errors import ConfigurationError, StoreError
from workhorse.job import new_job_id

SERVER = os.environ.get("WORKHORSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Bound on any single wait in these tests.
PROMPT = 5.0


def new_job(name: str = "task", queue: str = "q", **fields: Any) -> NewJob:
    values: dict[str, Any] = {"headers": {}, "priority": 0, "timeout": None, **fields}
    return NewJob(id=new_job_id(), name=name, queue=queue, payload=codec.encode({"n": 1}),
                  **values)


def with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    name = f"whtest_{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(SERVER)
    try:
        keys = [key async for key in client.scan_iter(match=f"{{{name}}}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def url(namespace: str) -> str:
    return with_query(SERVER, f"namespace={namespace}")


@pytest.fixture
async def backend(url: str) -> AsyncIterator[RedisBackend]:
    store = RedisBackend(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    """A plain client of the server, as another program would have."""
    client = aioredis.Redis.from_url(SERVER)
    try:
        yield client
    finally:
        await client.aclose()


async def keys_of(raw: aioredis.Redis, namespace: str) -> list[bytes]:
    return [key async for key in raw.scan_iter(match=f"{{{namespace}}}*")]


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` (for things Redis does on its own clock, like expiry), bounded."""
    deadline = asyncio.get_running_loop().time() + PROMPT
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"still waiting after {PROMPT} s for {what}")
        await asyncio.sleep(0.02)


async def still_pending(task: asyncio.Task[object], seconds: float = 0.2) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


# -- the URL --------------------------------------------------------------------------------


def test_the_url_gives_password_db_namespace_and_our_options_are_stripped() -> None:
    store = RedisBackend("redis://:s3cret@db.example:6380/4?namespace=shop&result_ttl=60"
                         "&socket_timeout=3")
    settings = store._settings
    assert (settings.namespace, settings.prefix, settings.result_ttl) == ("shop", "{shop}:", 60.0)
    options = settings.connection
    assert (options["host"], options["port"], options["db"], options["password"]) == \
        ("db.example", 6380, 4, "s3cret")
    assert options["socket_timeout"] == 3.0
    assert options["socket_connect_timeout"] == 5.0
    assert "namespace" not in options and "result_ttl" not in options
    assert "s3cret" not in settings.location
    assert store.url.endswith("socket_timeout=3")


def test_defaults_namespace_and_result_ttl() -> None:
    settings = RedisBackend("redis://localhost:6379/0")._settings
    assert (settings.namespace, settings.result_ttl) == ("workhorse", 7 * 86400.0)
    assert RedisBackend("redis://localhost/0", result_ttl=None)._settings.result_ttl is None
    assert RedisBackend("redis://localhost/0?result_ttl=none")._settings.result_ttl is None


def test_rediss_is_accepted_with_redis_py_tls_options() -> None:
    store = create_backend("rediss://:pw@cache.example:6380/0?ssl_cert_reqs=none&namespace=x")
    assert isinstance(store, RedisBackend)
    options = store._settings.connection
    assert issubclass(options["connection_class"], SSLConnection)
    assert options["ssl_cert_reqs"] == "none"


@pytest.mark.parametrize("bad", [
    "redis://localhost/0?namespace=",
    "redis://localhost/0?namespace=a{b}",
    "redis://localhost/0?result_ttl=0",
    "redis://localhost/0?result_ttl=soon",
    "redis://localhost/0?no_such_option=1",
    "redis://localhost/0?socket_timeout=abc",
])
def test_a_bad_url_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisBackend(bad)


async def test_transactional_enqueue_is_refused(backend: RedisBackend) -> None:
    with pytest.raises(ConfigurationError, match="not supported by the redis backend"):
        await backend.enqueue([new_job()], connection=object())


async def test_an_unreachable_server_fails_promptly_with_store_error() -> None:
    store = RedisBackend("redis://127.0.0.1:1/0?namespace=nowhere")
    try:
        with pytest.raises(StoreError, match=re.escape("cannot reach Redis at redis://127.0.0.1:1/0")):
            await asyncio.wait_for(store.enqueue([new_job()]), 30)
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.claim("w", ["q"], 1, 30.0), 30)
    finally:
        await store.close()


async def test_open_refuses_a_namespace_of_a_newer_layout(
    backend: RedisBackend, raw: aioredis.Redis, namespace: str
) -> None:
    await raw.set(f"{{{namespace}}}:version", 99)
    with pytest.raises(StoreError, match="upgrade workhorse"):
        await backend.open()


# -- keys --------------------------------------------------------------------------------


async def test_every_key_of_a_namespace_is_in_one_hash_slot(
    backend: RedisBackend, raw: aioredis.Redis, namespace: str
) -> None:
    now = await backend.now()
    await backend.enqueue([
        new_job("a", "q:1", unique_key="u1", idempotency_key="i1"),
        new_job("b", "q2", run_at=now + 3600),
        new_job("a", "q:1"),
        new_job("c", "q2", idempotency_key="i2"),
    ])
    limits = {"a": Limits(max_concurrency=1, rate=100.0, burst=5)}
    claimed = await backend.claim("w1", ["q:1", "q2"], 10, 30.0, limits)
    await backend.heartbeat(WorkerInfo("w1", "h", 1, 2, ["q:1"], now), [r.id for r in claimed],
                            30.0)
    first = claimed[0]
    await backend.retry(first.id, first.token or "", run_at=now + 60, status=500, error="x",
                        traceback=None)
    for record in claimed[1:]:
        await backend.ack(record.id, record.token or "", state=State.SUCCEEDED, status=200)
    await backend.pause("q2")
    watcher = asyncio.create_task(backend.wait_finished(first.id, 30))
    await still_pending(watcher)
    await backend.queue_stats()

    keys = await keys_of(raw, namespace)
    assert len(keys) > 15
    assert {key_slot(key) for key in keys} == {key_slot(f"{{{namespace}}}".encode())}
    watcher.cancel()
    await asyncio.wait({watcher})


async def test_queue_and_handler_names_with_colons_do_not_collide(backend: RedisBackend) -> None:
    one, two = new_job("c", "a:b"), new_job("b:c", "a")
    await backend.enqueue([one, two])
    assert [r.id for r in await backend.claim("w", ["a:b"], 10, 30.0)] == [one.id]
    assert [r.id for r in await backend.claim("w", ["a"], 10, 30.0)] == [two.id]


async def test_any_priority_orders_exactly_and_keeps_fifo(backend: RedisBackend) -> None:
    jobs = [new_job(priority=p) for p in (10**12, -(10**12), 10**12, 10**12 + 1, 0)]
    await backend.enqueue(jobs)
    order = [r.id for r in await backend.claim("w", ["q"], 10, 30.0)]
    assert order == [jobs[3].id, jobs[0].id, jobs[2].id, jobs[4].id, jobs[1].id]


async def test_an_enqueue_sent_again_is_not_written_twice(backend: RedisBackend) -> None:
    job = new_job(unique_key="u", idempotency_key="i")
    [first] = await backend.enqueue([job])
    [again] = await backend.enqueue([job])  # as redis-py's retry would after a lost reply
    assert (again.id, again.outcome, again.state) == (job.id, EnqueueOutcome.CREATED, State.READY)
    assert first == again
    assert [r.id for r in await backend.list_jobs()] == [job.id]


# -- waiting -------------------------------------------------------------------------------


async def test_an_idle_waiter_wakes_when_another_client_enqueues(
    backend: RedisBackend, url: str
) -> None:
    waiter = asyncio.create_task(backend.wait_for_work(["q"], 30))
    assert await still_pending(waiter)
    other = RedisBackend(url)
    try:
        await other.enqueue([new_job(queue="q")])
    finally:
        await other.close()
    await asyncio.wait_for(waiter, PROMPT)


async def test_a_waiter_blocked_by_max_concurrency_waits_for_a_free_slot(
    backend: RedisBackend,
) -> None:
    limits = {"one": Limits(max_concurrency=1)}
    await backend.enqueue([new_job("one"), new_job("one")])
    [running] = await backend.claim("w", ["q"], 5, 30.0, limits)
    assert await backend.claim("w", ["q"], 5, 30.0, limits) == []

    # READY work exists but cannot be claimed: the waiter must block, not spin...
    waiter = asyncio.create_task(backend.wait_for_work(["q"], 30))
    assert await still_pending(waiter)
    # ...until the slot frees up.
    await backend.ack(running.id, running.token or "", state=State.SUCCEEDED, status=200)
    await asyncio.wait_for(waiter, PROMPT)
    assert len(await backend.claim("w", ["q"], 5, 30.0, limits)) == 1


async def test_a_waiter_blocked_by_a_rate_limit_wakes_for_the_next_token(
    backend: RedisBackend,
) -> None:
    limits = {"slow": Limits(rate=2.0, burst=1)}
    await backend.enqueue([new_job("slow"), new_job("slow")])
    assert len(await backend.claim("w", ["q"], 5, 30.0, limits)) == 1
    assert await backend.claim("w", ["q"], 5, 30.0, limits) == []
    await asyncio.wait_for(backend.wait_for_work(["q"], 30), PROMPT)


async def test_a_full_claim_passes_the_wake_up_on(backend: RedisBackend, url: str) -> None:
    first = asyncio.create_task(backend.wait_for_work(["q"], 30))
    assert await still_pending(first)
    other = RedisBackend(url)
    try:
        second = asyncio.create_task(other.wait_for_work(["q"], 30))
        assert await still_pending(second)
        await backend.enqueue([new_job(), new_job()])
        done, _ = await asyncio.wait({first, second}, timeout=PROMPT,
                                     return_when=asyncio.FIRST_COMPLETED)
        woken = backend if first in done else other
        assert len(await woken.claim("w", ["q"], 1, 30.0)) == 1  # full: work is left
        await asyncio.wait_for(asyncio.gather(first, second), PROMPT)
    finally:
        await other.close()


async def test_wait_finished_wakes_for_a_job_finished_by_another_client(
    backend: RedisBackend, url: str
) -> None:
    job = new_job()
    await backend.enqueue([job])
    waiter = asyncio.create_task(backend.wait_finished(job.id, 30))
    assert await still_pending(waiter)
    other = RedisBackend(url)
    try:
        [record] = await other.claim("w", ["q"], 1, 30.0)
        await other.ack(record.id, record.token or "", state=State.SUCCEEDED, status=200,
                        result=b"7")
    finally:
        await other.close()
    finished = await asyncio.wait_for(waiter, PROMPT)
    assert finished is not None and (finished.state, finished.result) == (State.SUCCEEDED, b"7")


# -- garbage and expiry ----------------------------------------------------------------------


async def test_garbage_in_a_ready_queue_becomes_a_dead_record_and_claim_goes_on(
    backend: RedisBackend, raw: aioredis.Redis, namespace: str
) -> None:
    good = [new_job(), new_job()]
    await backend.enqueue(good)
    [ready_key] = [key async for key in raw.scan_iter(match=f"{{{namespace}}}:queue:*")]
    broken = new_job()
    await backend.enqueue([broken])
    await raw.hdel(f"{{{namespace}}}:job:{broken.id}", "payload")
    await raw.zadd(ready_key, {b"\xffnot-a-job": 0, b"0000000000000001gone-id": -1})

    claimed = await backend.claim("w", ["q"], 10, 30.0)
    assert sorted(r.id for r in claimed) == sorted(j.id for j in good)
    dead = {r.id: r for r in await backend.list_jobs(state=State.DEAD)}
    assert len(dead) == 3
    assert {r.status for r in dead.values()} == {400}
    assert all(r.error and r.error.startswith("garbage in queue 'q'") for r in dead.values())
    assert "no job 'gone-id'" in (dead["gone-id"].error or "")
    assert "has no payload" in (dead[broken.id].error or "")
    [odd] = [r for r in dead.values() if r.id not in ("gone-id", broken.id)]
    assert "\\xffnot-a-job" in (odd.error or "")
    assert await raw.zcard(ready_key) == 0
    assert await backend.claim("w", ["q"], 10, 30.0) == []


async def test_finished_jobs_expire_and_the_indexes_forget_them(url: str) -> None:
    store = RedisBackend(with_query(url, "result_ttl=0.2"))
    try:
        done, live = new_job(idempotency_key="once"), new_job()
        await store.enqueue([done, live])
        [record, _] = await store.claim("w", ["q"], 2, 30.0)
        assert record.id == done.id
        await store.ack(done.id, record.token or "", state=State.SUCCEEDED, status=200)

        async def expired() -> bool:
            return await store.get(done.id) is None

        await eventually(expired, "the finished job to expire")
        assert [r.id for r in await store.list_jobs()] == [live.id]
        assert await store.list_jobs(state=State.SUCCEEDED) == []
        [stats] = await store.queue_stats()
        assert (stats.counts[State.SUCCEEDED], stats.counts[State.RUNNING]) == (0, 1)
        assert await store.prune(keep=0) == 0
        # Its idempotency key expired with it: the key is free again.
        [again] = await store.enqueue([new_job(idempotency_key="once")])
        assert again.outcome is EnqueueOutcome.CREATED
        assert await store.get(live.id) is not None  # live jobs never expire
    finally:
        await store.close()


# -- event loops and connections ---------------------------------------------------------------


async def test_one_backend_serves_a_second_event_loop(backend: RedisBackend) -> None:
    job = new_job()
    errors: list[BaseException] = []

    def other_loop() -> None:
        try:
            asyncio.run(backend.enqueue([job]))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    await asyncio.to_thread(thread.join, PROMPT)
    assert not thread.is_alive() and errors == []
    # The other loop's client closed with its loop; this loop's is unaffected.
    assert list(backend._loops) == [asyncio.get_running_loop()]
    [record] = await backend.claim("w", ["q"], 1, 30.0)
    assert record.id == job.id


async def test_close_leaves_no_task_and_ends_waits(url: str) -> None:
    store = RedisBackend(url)
    job = new_job()
    await store.enqueue([job])
    waits = [asyncio.create_task(store.wait_finished(job.id, 30)),
             asyncio.create_task(store.wait_for_work(["elsewhere"], 30))]
    assert await still_pending(waits[0]) and await still_pending(waits[1])
    await store.close()
    done, _ = await asyncio.wait(waits, timeout=PROMPT)
    assert len(done) == 2
    assert isinstance(waits[0].exception(), StoreError)  # closed while waiting
    assert waits[1].exception() is None
    current = asyncio.current_task()
    assert [t.get_name() for t in asyncio.all_tasks() if t is not current] == []
    # A closed backend opens again on use.
    assert (await store.get(job.id)) is not None
    await store.close()


async def test_connections_the_server_dropped_are_replaced(
    url: str, raw: aioredis.Redis
) -> None:
    name = f"whtest-{uuid.uuid4().hex[:8]}"
    store = RedisBackend(with_query(url, f"client_name={name}"))
    try:
        job = new_job()
        await store.enqueue([job])
        for client in await raw.client_list():
            if client["name"] == name:
                await raw.client_kill_filter(_id=client["id"])
        assert (await store.get(job.id)) is not None
        [record] = await store.claim("w", ["q"], 1, 30.0)
        assert record.id == job.id
    finally:
        await store.close()


# -- hand-off: a lone job enqueued while a worker waits goes straight to it -----------------


def standing(raw: aioredis.Redis, namespace: str, worker: str) -> Callable[[], Awaitable[bool]]:
    async def exists() -> bool:
        return bool(await raw.exists(f"{{{namespace}}}:waiter:{worker}"))
    return exists


async def waiting(backend: RedisBackend, raw: aioredis.Redis, namespace: str,
                  handoff: Handoff, timeout: float = 30.0) -> asyncio.Task[list[JobRecord]]:
    """``wait_for_work`` on queue "q" with ``handoff``, in a task, once its standing claim is
    in the store."""
    waiter = asyncio.create_task(backend.wait_for_work(["q"], timeout, handoff=handoff))
    await eventually(standing(raw, namespace, handoff.worker_id), "the standing claim")
    return waiter


async def test_a_lone_job_goes_straight_to_the_waiting_worker_under_its_lease(
    backend: RedisBackend, raw: aioredis.Redis, namespace: str,
) -> None:
    waiter = await waiting(backend, raw, namespace, Handoff("w1", 20.0))
    [enqueued] = await backend.enqueue([new_job()])

    [record] = await asyncio.wait_for(waiter, PROMPT)
    assert (record.id, record.state, record.attempt, record.lease_owner) == (
        enqueued.id, State.RUNNING, 1, "w1")
    assert record.payload == b'{"n":1}' and record.token
    stored = await backend.get(record.id)
    assert stored is not None
    assert (stored.state, stored.token, stored.attempt) == (State.RUNNING, record.token, 1)
    assert stored.started_at == stored.enqueued_at  # leased in the enqueue's own step
    assert (await backend.queue_stats())[0].counts[State.RUNNING] == 1
    # The lease is an ordinary one: the worker settles it, and no one else can claim it.
    assert await backend.claim("w2", ["q"], 5, 20.0) == []
    assert await backend.ack(record.id, record.token or "", state=State.SUCCEEDED, status=200)
    assert not await standing(raw, namespace, "w1")()


async def test_no_hand_off_to_a_paused_queue_a_limited_handler_or_behind_ready_work(
    backend: RedisBackend, raw: aioredis.Redis, namespace: str,
) -> None:
    handoff = Handoff("w1", 20.0, {"limited": Limits(max_concurrency=5)})

    async def waits_through(enqueue: Callable[[], Awaitable[object]]) -> list[object]:
        waiter = await waiting(backend, raw, namespace, handoff)
        await enqueue()
        return list(await asyncio.wait_for(waiter, PROMPT))  # woken, given nothing

    limited = new_job("limited")
    assert await waits_through(lambda: backend.enqueue([limited])) == []
    # Behind READY work (the limited job): the new one waits its turn in line.
    behind = new_job()
    assert await waits_through(lambda: backend.enqueue([behind])) == []
    [first, second] = await backend.claim("w1", ["q"], 5, 20.0, handoff.limits)
    assert [first.id, second.id] == [limited.id, behind.id]

    await backend.pause("q")
    paused = new_job()
    waiter = await waiting(backend, raw, namespace, handoff)
    await backend.enqueue([paused])
    assert await asyncio.wait_for(waiter, PROMPT) == []  # woken, as before, given nothing
    record = await backend.get(paused.id)
    assert record is not None and record.state is State.READY


async def test_a_cancelled_wait_ends_its_standing_claim(
    backend: RedisBackend, raw: aioredis.Redis, namespace: str,
) -> None:
    # redis-py may hold a cancel until the blocking pop returns: block for 2 s at most.
    waiter = await waiting(backend, raw, namespace, Handoff("w1", 20.0), timeout=2.0)
    waiter.cancel()
    await asyncio.wait({waiter}, timeout=PROMPT)
    assert waiter.cancelled()
    assert not await standing(raw, namespace, "w1")()
    [enqueued] = await backend.enqueue([new_job()])
    record = await backend.get(enqueued.id)
    assert record is not None and (record.state, record.attempt) == (State.READY, 0)


async def test_a_job_handed_to_a_wait_that_is_abandoned_goes_back_in_line(
    backend: RedisBackend, raw: aioredis.Redis, namespace: str,
) -> None:
    # The standing claim alone, as a wait leaves it, with no one blocked on the inbox: the
    # job is handed off into it, as when a wait is cancelled just as the job arrives.
    await backend._run("next_due", ["w1", "20", "tok", b"{}", "30000", "q"])
    [enqueued] = await backend.enqueue([new_job()])
    assert await raw.llen(f"{{{namespace}}}:inbox:w1") > 0
    await backend._abandon("w1", [])
    record = await backend.get(enqueued.id)
    assert record is not None and (record.state, record.attempt) == (State.READY, 0)
    assert (await backend.queue_stats())[0].counts[State.RUNNING] == 0
    [claimed] = await backend.claim("w2", ["q"], 5, 20.0)
    assert (claimed.id, claimed.attempt) == (enqueued.id, 1)


async def test_a_wait_that_ends_without_popping_its_inbox_still_returns_what_it_was_handed(
    backend: RedisBackend, raw: aioredis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Waits this short are slept, not blocked in Redis: the job handed off meanwhile stays
    # in the inbox, and comes back with the end of the standing claim.
    monkeypatch.setattr("workhorse.backends.redis.backend._SHORT_WAIT", 60.0)
    waiter = await waiting(backend, raw, namespace, Handoff("w1", 20.0), timeout=2.0)
    [enqueued] = await backend.enqueue([new_job()])
    assert await raw.llen(f"{{{namespace}}}:inbox:w1") > 0
    [record] = await asyncio.wait_for(waiter, PROMPT)
    assert (record.id, record.state, record.lease_owner) == (enqueued.id, State.RUNNING, "w1")
    assert await raw.llen(f"{{{namespace}}}:inbox:w1") == 0


async def test_an_idle_worker_runs_a_new_job_from_its_hand_off_and_a_stopped_one_gets_none(
    url: str, raw: aioredis.Redis, namespace: str,
) -> None:
    app = wh.App(url)
    app.register("echo", lambda job: job.args["n"])
    worker = wh.Worker(app, prune_interval=0)
    await worker.start()
    try:
        await eventually(standing(raw, namespace, worker.id), "the standing claim")
        ref = await app.enqueue("echo", {"n": 7})
        assert await ref.result(timeout=PROMPT) == 7
        record = await ref.record()
        assert record.started_at == record.enqueued_at  # handed off, not claimed
        assert record.attempt == 1
        await eventually(standing(raw, namespace, worker.id), "the standing claim")
    finally:
        await worker.stop()
    assert not await standing(raw, namespace, worker.id)()
    ref = await app.enqueue("echo", {"n": 8})
    assert await ref.status() is wh.State.READY
    await app.close()
