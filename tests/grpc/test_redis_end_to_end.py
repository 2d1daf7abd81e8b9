"""End to end on Redis: jobs enqueued over gRPC, run by a worker, results streamed back."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import workhorse as wh
from tests.conformance.conftest import REDIS_URL, cleanup
from tests.grpc.conftest import WAIT, bounded
from tests.grpc.grpcapp import build
from tests.grpc.protos import ResizeRequest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A private namespace on the local Redis, deleted after the test."""
    url = f"{REDIS_URL}?namespace=whgrpc_{uuid.uuid4().hex[:12]}"
    yield url
    await cleanup(url)


async def test_grpc_enqueue_runs_on_a_worker_over_redis(redis_url, serve, connect, worker):
    app = build(redis_url)
    try:
        client = connect(await serve(app))
        async with client.results(timeout=WAIT) as results:
            plain = await client.enqueue("add", {"a": 20, "b": 22})
            typed = await client.enqueue("resize", ResizeRequest(path="/r.png", width=4))
            await worker(app)
            seen = {r.job_id: json.loads(r.json_result)
                    for r in [await bounded(anext(results)), await bounded(anext(results))]}
        assert seen == {plain: {"sum": 42}, typed: {"path": "/r.png", "width": 8}}
        assert (await client.get_job(typed)).proto_type == "whtest.images.ResizeRequest"
    finally:
        await app.close()


async def _start(*args: str, url: str, **env: str) -> asyncio.subprocess.Process:
    environment = {**os.environ, "WORKHORSE_URL": url, **env,
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workhorse", *args, env=environment,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _port(proc: asyncio.subprocess.Process) -> int:
    assert proc.stderr is not None
    while True:
        line = (await bounded(proc.stderr.readline())).decode()
        assert line, "the gRPC server exited before it listened"
        found = re.search(r"gRPC service on [\d.]+:(\d+)", line)
        if found:
            return int(found.group(1))


async def _end(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), WAIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


@pytest.mark.slow
async def test_the_cli_server_and_a_worker_process_over_redis(redis_url, connect, certs):
    token = uuid.uuid4().hex
    server = await _start("grpc", "tests.grpc.grpcapp:app", "--port", "0",
                          "--tls-cert", str(certs.folder / "server_cert.pem"),
                          "--tls-key", str(certs.folder / "server_key.pem"),
                          url=redis_url, WORKHORSE_GRPC_TOKEN=token)
    worker_proc = None
    try:
        port = await _port(server)
        client = wh.grpc.Client(f"127.0.0.1:{port}", token=token, ca=certs.ca)
        try:
            async with client.results(names=["add"], timeout=WAIT) as results:
                job_id = await client.enqueue("add", {"a": 1, "b": 2})
                worker_proc = await _start("worker", "tests.grpc.grpcapp:app",
                                           "--log-level", "WARNING", url=redis_url)
                result = await bounded(anext(results))
            assert (result.job_id, json.loads(result.json_result)) == (job_id, {"sum": 3})
            anonymous = wh.grpc.Client(f"127.0.0.1:{port}", ca=certs.ca)
            try:
                with pytest.raises(Exception, match="UNAUTHENTICATED"):
                    await bounded(anonymous.stats())
            finally:
                await anonymous.close()
        finally:
            await client.close()
    finally:
        if worker_proc is not None:
            await _end(worker_proc)
        assert await _end(server) == 0
