"""The auth hook, run as a server interceptor: refusals, exemptions and silent logs."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import workhorse as wh
from tests.grpc.conftest import bounded

TOKEN = "s3cret-token-value"


async def expect_refused(call, code):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() is code
    return refused.value


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_a_bearer_token_is_required(app, serve, connect, caplog):
    caplog.set_level(logging.DEBUG)
    server = await serve(app, auth=wh.grpc.bearer_token(TOKEN))
    anonymous = connect(server)
    wrong = connect(server, token="not-the-token")
    await expect_refused(anonymous.enqueue("add", {"secret": "payload-value"}),
                         grpc.StatusCode.UNAUTHENTICATED)
    await expect_refused(wrong.enqueue("add", {"secret": "payload-value"}),
                         grpc.StatusCode.UNAUTHENTICATED)
    await expect_refused(wrong.stats(), grpc.StatusCode.UNAUTHENTICATED)
    with pytest.raises(grpc.aio.AioRpcError) as stream_refused:
        async with wrong.results(timeout=5):
            pass
    assert stream_refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert (await app.admin.stats()).counts["ready"] == 0
    trusted = connect(server, token=TOKEN)
    job_id = await trusted.enqueue("add", {"secret": "payload-value"})
    assert (await trusted.get_job(job_id)).name == "add"
    assert "refused" in caplog.text
    for secret in (TOKEN, "not-the-token", "payload-value"):
        assert secret not in caplog.text


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_the_hook_sees_metadata_and_method_and_may_deny(app, serve, connect):
    seen: list[tuple[str, str]] = []

    async def auth(metadata, method):
        seen.append((metadata.get("x-role", ""), method))
        if "x-role" not in metadata:
            raise wh.grpc.Unauthenticated("who are you?")
        if method.endswith("/Enqueue") and metadata["x-role"] != "writer":
            raise wh.grpc.PermissionDenied("read only")
        return True

    server = await serve(app, auth=auth)
    reader = connect(server, metadata={"x-role": "reader"})
    writer = connect(server, metadata={"x-role": "writer"})
    error = await expect_refused(connect(server).stats(), grpc.StatusCode.UNAUTHENTICATED)
    assert error.details() == "who are you?"
    error = await expect_refused(reader.enqueue("add"), grpc.StatusCode.PERMISSION_DENIED)
    assert error.details() == "read only"
    assert (await reader.stats()).queues == 0
    assert await writer.enqueue("add") is not None
    assert ("reader", "/workhorse.v1.Jobs/Enqueue") in seen
    assert ("writer", "/workhorse.v1.Jobs/Enqueue") in seen


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_a_failing_hook_refuses(app, serve, connect, caplog):
    def auth(metadata, method):
        raise RuntimeError(f"broken hook saw {metadata.get('authorization')}")

    server = await serve(app, auth=auth)
    await expect_refused(connect(server, token=TOKEN).stats(), grpc.StatusCode.UNAUTHENTICATED)
    assert "auth hook raised" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_health_checks_need_no_token_and_reflection_does(app, serve):
    server = await serve(app, auth=wh.grpc.bearer_token(TOKEN))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await bounded(health.Check(health_pb2.HealthCheckRequest(
            service="workhorse.v1.Jobs")))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.ServerReflectionInfo(iter([request])):
                pass
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_an_empty_token_is_a_mistake():
    with pytest.raises(ValueError):
        wh.grpc.bearer_token("")
