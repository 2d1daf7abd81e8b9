"""The standard services registered beside the job service: health and reflection."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.grpc.conftest import WAIT, bounded


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_health_is_serving_then_not_after_stop(app, serve):
    server = await serve(app)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "workhorse.v1.Jobs"):
            reply = await bounded(health.Check(health_pb2.HealthCheckRequest(service=service)))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await bounded(anext(aiter(watch)))).status == \
            health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(server.stop(grace=WAIT))
        assert (await bounded(anext(aiter(watch)))).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        await bounded(stopping)


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_reflection_describes_the_service(app, serve):
    server = await serve(app)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="workhorse.v1.Jobs")]
        replies = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"workhorse.v1.Jobs", "grpc.health.v1.Health"} <= names
    [file] = replies[1].file_descriptor_response.file_descriptor_proto[:1]
    assert b"workhorse/v1/jobs.proto" in file
