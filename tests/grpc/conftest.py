"""Fixtures of the gRPC tests: an app, a server on a free localhost port, clients, certs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import workhorse as wh
from tests.grpc.certs import Certificates, make_certificates

#: The longest any one wait in these tests may take, in seconds.
WAIT = 10.0

ServeFn = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["memory", "sqlite"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[wh.App]:
    """An App on a private memory or SQLite store, closed after the test."""
    url = "memory://" if request.param == "memory" else "sqlite:///" + str(tmp_path / "g.db")
    application = wh.App(url)
    try:
        yield application
    finally:
        await application.close()


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """``await serve(app, **server_options)``: a started ``wh.grpc.Server`` on a free
    localhost port, stopped after the test."""
    servers: list[Any] = []

    async def start(app: wh.App, **options: Any) -> Any:
        server = wh.grpc.Server(app, port=0, host="127.0.0.1", **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace=None)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """``connect(server, **client_options)``: a ``wh.grpc.Client`` of ``server``, closed
    after the test."""
    clients: list[Any] = []

    def make(server: Any, **options: Any) -> Any:
        target = f"127.0.0.1:{server.port}"
        client = wh.grpc.Client(target, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def worker() -> AsyncIterator[Callable[..., Awaitable[wh.Worker]]]:
    """``await worker(app, **options)``: a started in-process ``wh.Worker``, stopped after."""
    workers: list[wh.Worker] = []

    async def start(app: wh.App, **options: Any) -> wh.Worker:
        runner = wh.Worker(app, **{"concurrency": 4, "poll_interval": 0.05, **options})
        await runner.start()
        workers.append(runner)
        return runner

    yield start
    for runner in workers:
        await runner.stop(graceful=False)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


async def bounded(awaitable: Awaitable[Any]) -> Any:
    """``awaitable``, failing the test if it takes longer than ``WAIT``."""
    return await asyncio.wait_for(awaitable, WAIT)
