"""Typed handlers: protobuf payloads decoded for the handler, wrong types refused."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2

import workhorse as wh
from tests.grpc.conftest import bounded
from tests.grpc.protos import CropRequest, ResizeRequest
from workhorse.grpc._proto.workhorse.v1 import jobs_pb2
from workhorse.grpc.payloads import request_for


def typed_handlers(app: wh.App) -> list[object]:
    """Register ``resize`` (takes a ResizeRequest) and ``plain``; returns what ``resize``
    received."""
    received: list[object] = []

    @wh.grpc.proto_handler(app, "resize", ResizeRequest, queue="images")
    async def resize(job: wh.Job) -> dict:
        received.append(job.args)
        return {"path": job.args.path, "width": job.args.width * 2}

    @app.handler("plain")
    async def plain(job: wh.Job) -> dict:
        return job.args

    return received


async def test_a_handler_receives_the_decoded_message(app, serve, connect, worker):
    received = typed_handlers(app)
    client = connect(await serve(app))
    job_id = await client.enqueue("resize", ResizeRequest(path="/a.png", width=21))
    job = await client.get_job(job_id)
    assert (job.queue, job.proto_type) == ("images", "whtest.images.ResizeRequest")
    assert json.loads(job.json_args) == {"path": "/a.png", "width": 21}
    await worker(app)
    assert await bounded(client.result(job_id)) == {"path": "/a.png", "width": 42}
    [message] = received
    assert isinstance(message, ResizeRequest)
    assert message == ResizeRequest(path="/a.png", width=21)


async def test_json_args_of_a_typed_job_are_parsed_as_its_message(app, serve, connect, worker):
    received = typed_handlers(app)
    client = connect(await serve(app))
    job_id = await client.enqueue("resize", {"path": "/b.png", "width": 5})
    await worker(app)
    assert await bounded(client.result(job_id)) == {"path": "/b.png", "width": 10}
    assert received == [ResizeRequest(path="/b.png", width=5)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.enqueue("resize", {"path": "/c.png", "height": 5})
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "ResizeRequest" in refused.value.details()


async def test_an_any_of_the_wrong_type_is_refused_and_nothing_is_enqueued(app, serve,
                                                                          connect):
    typed_handlers(app)
    client = connect(await serve(app))
    good = wh.grpc.job_spec("resize", ResizeRequest(path="/a.png", width=1))
    wrong = wh.grpc.job_spec("resize", CropRequest(path="/a.png"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.enqueue_many([good, wrong])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "whtest.images.CropRequest" in refused.value.details()
    assert (await app.admin.stats()).counts["ready"] == 0


@pytest.mark.parametrize("payload", [
    duration_pb2.Duration(seconds=1),  # a well-known type, packed as usual
    None,  # an Any whose bytes do not decode as the type its URL names
])
async def test_bad_any_payloads_are_refused(app, serve, connect, payload):
    typed_handlers(app)
    client = connect(await serve(app))
    spec = jobs_pb2.JobSpec(name="resize")
    if payload is None:
        spec.proto_args.CopyFrom(any_pb2.Any(
            type_url="type.googleapis.com/whtest.images.ResizeRequest", value=b"\xff\xff"))
    else:
        spec.proto_args.Pack(payload)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.enqueue_many([spec])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_an_any_for_an_untyped_job_is_refused(app, serve, connect):
    typed_handlers(app)
    client = connect(await serve(app))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.enqueue("plain", ResizeRequest(path="/a.png"))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "proto_handler" in refused.value.details()


async def test_types_given_to_the_server_cover_jobs_handled_elsewhere(app, serve, connect):
    client = connect(await serve(app, types={"resize": ResizeRequest}))
    job_id = await client.enqueue("resize", ResizeRequest(path="/x", width=3))
    assert (await client.get_job(job_id)).proto_type == "whtest.images.ResizeRequest"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.enqueue("resize", CropRequest(path="/x"))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stored_payload_of_another_type_ends_the_job_with_400(app):
    received = typed_handlers(app)
    ref = await app.enqueue("resize", {"path": "/a"},
                            headers={wh.grpc.PROTO_TYPE_HEADER: "whtest.images.CropRequest"})
    worker = wh.Worker(app, poll_interval=0.05)
    await worker.start()
    try:
        with pytest.raises(wh.JobFailed) as failed:
            await ref.result(timeout=10)
    finally:
        await worker.stop(graceful=False)
    assert failed.value.status == 400
    assert "CropRequest" in (failed.value.error or "")
    assert received == []


async def test_in_process_jobs_pass_their_message_as_it_is(app):
    received = typed_handlers(app)
    message = ResizeRequest(path="/p", width=1)
    async with wh.LocalWorker(app) as local:
        job = await local.perform(wh.Job("resize", args=message), sync=True)
    assert job.status == 200
    assert received[0] is message


def test_message_types_lists_the_typed_handlers():
    app = wh.App("memory://")
    typed_handlers(app)
    assert wh.grpc.message_types(app) == {"resize": ResizeRequest}


def test_a_spec_run_at_is_utc_whatever_the_server_time_zone(monkeypatch):
    at = 1_800_000_000.25
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        request = request_for(wh.grpc.job_spec("plain", {}, at=at), {})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert request.at == pytest.approx(at, abs=1e-6)
