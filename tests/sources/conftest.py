"""Fixtures of the source tests: a private Redis stream and PostgreSQL schema per test, both
removed afterwards, and a recorder of the messages a handler saw and how each run ended."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

import workhorse as wh
from tests.conformance.conftest import POSTGRES_URL, REDIS_URL
from workhorse.hooks import JobEvent

#: Longest any single bounded wait of these tests may take, in seconds.
WAIT = 10.0


@dataclasses.dataclass
class Stream:
    """A stream name private to one test, its dead stream and a client on the server."""

    url: str
    name: str
    dead: str
    client: aioredis.Redis


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    client = aioredis.Redis.from_url(REDIS_URL)
    name = f"whtest:source:{uuid.uuid4().hex[:12]}"
    try:
        yield Stream(REDIS_URL, name, f"{name}:dead", client)
    finally:
        await client.delete(name, f"{name}:dead")
        await client.aclose()


@dataclasses.dataclass
class Schema:
    """A PostgreSQL schema private to one test; ``table`` is a name qualified with it."""

    url: str
    name: str

    def table(self, table: str) -> str:
        return f"{self.name}.{table}"

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            return await (await conn.execute(query.format(schema=self.name))).fetchall()


@pytest.fixture
async def schema() -> AsyncIterator[Schema]:
    name = f"whtest_src_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield Schema(POSTGRES_URL, name)
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL,
                                                         autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class Recorder:
    """Counts the runs of an app's handlers by their finish events (sent after the message
    was settled), and lets a test await a number of them."""

    def __init__(self, app: wh.App) -> None:
        self.finished: list[JobEvent] = []
        self._changed = asyncio.Event()
        app.hooks(on_finish=self._on_finish)

    def _on_finish(self, event: JobEvent) -> None:
        self.finished.append(event)
        self._changed.set()

    async def wait(self, count: int, timeout: float = WAIT) -> None:
        """Until ``count`` runs have finished; fails after ``timeout`` seconds."""
        async def enough() -> None:
            while len(self.finished) < count:
                self._changed.clear()
                await self._changed.wait()
        try:
            await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            pytest.fail(f"{len(self.finished)} of {count} runs finished after {timeout}s")

    def states(self) -> collections.Counter[str]:
        return collections.Counter(str(e.state) for e in self.finished)


@pytest.fixture
def app() -> wh.App:
    return wh.App("memory://")


@pytest.fixture
def recorder(app: wh.App) -> Recorder:
    return Recorder(app)
