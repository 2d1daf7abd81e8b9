"""Fixtures of the conformance suite: every test in this folder runs once per backend.

A backend joins the suite with one entry in ``BACKENDS``: an id and a factory that builds
its store URL from the test's ``tmp_path``. Server backends take their server from
$WORKHORSE_TEST_REDIS_URL / $WORKHORSE_TEST_POSTGRES_URL (default: the local services) and a
private namespace or schema per test.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import workhorse as wh
from workhorse import codec
from workhorse.backends import create_backend
from workhorse.backends.base import Backend, EnqueueOutcome, JobRecord, NewJob
from workhorse.job import new_job_id

#: Builds a store URL for one test from its private temporary directory.
UrlFactory = Callable[[Path], str]

#: Longest any single bounded wait in this suite may take, in seconds.
WAIT_LIMIT = 5.0


REDIS_URL = os.environ.get("WORKHORSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("WORKHORSE_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


def private_namespace(base: str, parameter: str) -> UrlFactory:
    """A server URL with a fresh namespace (Redis) or schema (PostgreSQL) for each test, so
    every test starts from an empty store; ``cleanup`` removes it afterwards."""

    def factory(_tmp_path: Path) -> str:
        separator = "&" if "?" in base else "?"
        return f"{base}{separator}{parameter}=whtest_{uuid.uuid4().hex[:12]}"

    return factory


BACKENDS: dict[str, UrlFactory] = {
    "memory": lambda _tmp_path: "memory://",
    # An absolute path after "sqlite:///" gives the four slashes of an absolute file URL.
    "sqlite": lambda tmp_path: "sqlite:///" + str(tmp_path / "conformance.db"),
    # Server backends: always collected, so an unreachable server fails the run, never skips.
    "redis": private_namespace(REDIS_URL, "namespace"),
    "postgresql": private_namespace(POSTGRES_URL, "schema"),
}


async def cleanup(url: str) -> None:
    """Remove what a test left in a server store: its Redis namespace or PostgreSQL schema."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if url.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url.split("?")[0])
        try:
            keys = [k async for k in client.scan_iter(match=f"{{{query['namespace']}}}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
    elif url.startswith("postgres"):
        import psycopg

        conn = await psycopg.AsyncConnection.connect(url.split("?")[0], autocommit=True)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{query["schema"]}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(params=[pytest.param(factory, id=key) for key, factory in BACKENDS.items()])
async def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The store URL of the backend under test, private to this test."""
    factory: UrlFactory = request.param
    url = factory(tmp_path)
    yield url
    await cleanup(url)


@pytest.fixture
async def backend(backend_url: str) -> AsyncIterator[Backend]:
    """An opened backend for ``backend_url``, closed after the test."""
    store = create_backend(backend_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def new_job(
    name: str = "task",
    args: Any = None,
    *,
    queue: str = "default",
    priority: int = 0,
    run_at: float | None = None,
    unique_key: str | None = None,
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> NewJob:
    """A NewJob with a fresh id and ``args`` (default ``{}``) encoded as its payload."""
    return NewJob(
        id=new_job_id(),
        name=name,
        queue=queue,
        payload=codec.encode({} if args is None else args),
        headers=dict(headers or {}),
        priority=priority,
        timeout=timeout,
        run_at=run_at,
        unique_key=unique_key,
        idempotency_key=idempotency_key,
    )


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[wh.App]:
    """An App on the backend under test, closed after the test (runtime-level tests)."""
    application = wh.App(backend_url)
    try:
        yield application
    finally:
        await application.close()


@pytest.fixture
def make_job() -> Callable[..., NewJob]:
    """``make_job(name="task", args=None, *, queue="default", ...)`` builds a NewJob."""
    return new_job


@pytest.fixture
def enqueue_job(backend: Backend) -> Callable[..., Awaitable[str]]:
    """``await enqueue_job(**new_job_kwargs)`` writes one job and returns its id."""

    async def enqueue(*args: Any, **kwargs: Any) -> str:
        job = new_job(*args, **kwargs)
        [done] = await backend.enqueue([job])
        assert done.outcome is EnqueueOutcome.CREATED
        assert done.id == job.id
        return job.id

    return enqueue


@pytest.fixture
def running_job(backend: Backend) -> Callable[..., Awaitable[JobRecord]]:
    """``await running_job(worker_id=..., lease=..., **new_job_kwargs)``: a job claimed.

    The job is enqueued and claimed from its queue, so that queue must hold no other job
    that ``claim`` would take first.
    """

    async def start(
        *args: Any, worker_id: str = "worker-1", lease: float = 30.0, **kwargs: Any
    ) -> JobRecord:
        job = new_job(*args, **kwargs)
        await backend.enqueue([job])
        [claimed] = await backend.claim(worker_id, [job.queue], 1, lease)
        assert claimed.id == job.id
        return claimed

    return start


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = WAIT_LIMIT, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"still waiting after {timeout} s for {what or condition}")
        await asyncio.sleep(0.005)


@pytest.fixture
def wait_for() -> Callable[..., Awaitable[None]]:
    """``await wait_for(async_condition, timeout=..., what=...)``: a bounded poll."""
    return wait_until


@pytest.fixture
def clock_past(backend: Backend) -> Callable[[float], Awaitable[float]]:
    """``await clock_past(t)`` waits (bounded) until the store's clock is past ``t``.

    Returns the store time it saw. Used where the contract is about time (leases, due
    times, ages) so that a test waits for the store's own clock, never a fixed sleep.
    """

    async def past(moment: float) -> float:
        seen = moment

        async def moved() -> bool:
            nonlocal seen
            seen = await backend.now()
            return seen > moment

        await wait_until(moved, what=f"the store clock to pass {moment}")
        return seen

    return past
