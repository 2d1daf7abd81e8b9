"""The app the gRPC end-to-end tests serve and work: its store comes from $WORKHORSE_URL."""

from __future__ import annotations

import workhorse as wh
from tests.grpc.protos import ResizeRequest


def build(url: str | None = None) -> wh.App:
    """An app with an ``add`` (JSON args) and a ``resize`` (ResizeRequest) handler."""
    application = wh.App(url)

    @application.handler("add")
    async def add(job: wh.Job) -> dict:
        return {"sum": job.args["a"] + job.args["b"]}

    @wh.grpc.proto_handler(application, "resize", ResizeRequest)
    async def resize(job: wh.Job[ResizeRequest]) -> dict:
        return {"path": job.args.path, "width": job.args.width * 2}

    return application


app = build()
