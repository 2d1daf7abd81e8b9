"""The dashboard's JSON API under ``/api``: a thin HTTP face of ``app.admin``.

Reads are GETs; every change is a POST (or DELETE for one job) and answers with what it did.
Bad input is a 400 with ``{"error": ...}``; a job or action that does not apply is a 404 or 409;
a store that cannot be reached is a 503.
The OpenAPI document that describes all of this is in ``openapi.py``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from workhorse import admin as admin_api
from workhorse.backends.base import State
from workhorse.web.openapi import openapi_document

if TYPE_CHECKING:
    from workhorse.admin import Admin
    from workhorse.web.sampler import Sampler

#: Longest page a list call returns, and most ids one bulk call takes.
MAX_LIMIT = 500
MAX_BULK = 1000
#: Longest job id, queue or handler name accepted (anything longer matches nothing anyway).
MAX_NAME = 512
#: The states each bulk action takes, in State order, as admin defines them.
RETRYABLE = tuple(s.value for s in State if s in admin_api.RETRYABLE)
REQUEUEABLE = tuple(s.value for s in State if s in admin_api.REQUEUEABLE)
DELETABLE = tuple(s.value for s in State if s in admin_api.DELETABLE)

Endpoint = Callable[[Request], Awaitable[Response]]


class JSONResponse(Response):
    """JSON through msgspec, which encodes the admin dataclasses as they are."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


class BadRequest(Exception):
    """A parameter the API cannot use; answered with 400."""


def error(status: int, message: str) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status)


class Api:
    """The endpoints, bound to one app's admin and the dashboard's sampler."""

    def __init__(self, admin: Admin, sampler: Sampler, *, secured: str | None = None) -> None:
        self.admin = admin
        self.sampler = sampler
        #: "bearer" or "basic" when auth guards the API, for the OpenAPI document.
        self.secured = secured

    def routes(self) -> list[Route]:
        """The routes, relative to the dashboard's root."""
        g, p = ["GET"], ["POST"]
        return [
            Route("/api/openapi.json", self._wrap(self.openapi), methods=g),
            Route("/api/stats", self._wrap(self.stats), methods=g),
            Route("/api/metrics", self._wrap(self.metrics), methods=g),
            Route("/api/queues", self._wrap(self.queues), methods=g),
            Route("/api/queues/{queue:path}/pause", self._wrap(self.pause), methods=p),
            Route("/api/queues/{queue:path}/resume", self._wrap(self.resume), methods=p),
            Route("/api/queues/{queue:path}/purge", self._wrap(self.purge), methods=p),
            Route("/api/workers", self._wrap(self.workers), methods=g),
            Route("/api/busy", self._wrap(self.busy), methods=g),
            Route("/api/jobs", self._wrap(self.jobs), methods=g),
            Route("/api/jobs/retry-all", self._wrap(self.retry_all), methods=p),
            Route("/api/jobs/requeue-all", self._wrap(self.requeue_all), methods=p),
            Route("/api/jobs/delete-all", self._wrap(self.delete_all), methods=p),
            Route("/api/jobs/bulk", self._wrap(self.bulk), methods=p),
            # One route for both methods, so a 405 lists both in its Allow header.
            Route("/api/jobs/{job_id}", self._wrap(self.job_or_delete),
                  methods=["GET", "DELETE"]),
            Route("/api/jobs/{job_id}/retry", self._wrap(self.retry), methods=p),
            Route("/api/jobs/{job_id}/requeue", self._wrap(self.requeue), methods=p),
            Route("/api/jobs/{job_id}/delete", self._wrap(self.delete), methods=p),
        ]

    def _wrap(self, endpoint: Endpoint) -> Endpoint:
        async def call(request: Request) -> Response:
            self.sampler.ensure_running()
            try:
                return await endpoint(request)
            except BadRequest as exc:
                return error(400, str(exc))

        call.__name__ = endpoint.__name__
        return call

    # -- reading -------------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        server = request.scope.get("root_path", "") or "/"
        return JSONResponse(openapi_document(server=server, secured=self.secured))

    async def stats(self, request: Request) -> Response:
        return JSONResponse(dict(dataclasses.asdict(await self.admin.stats()), now=time.time()))

    async def metrics(self, request: Request) -> Response:
        step = _int(request.query_params.get("step"), "step", 0, 0, 3600)
        points = await self.sampler.series(step or None)
        return JSONResponse({"interval": self.sampler.interval, "window": self.sampler.window,
                             "step": max(step, self.sampler.interval), "now": time.time(),
                             "points": points})

    async def queues(self, request: Request) -> Response:
        return JSONResponse(await self.admin.queues())

    async def workers(self, request: Request) -> Response:
        return JSONResponse({"now": time.time(), "workers": await self.admin.workers()})

    async def busy(self, request: Request) -> Response:
        return JSONResponse({"now": time.time(), "jobs": await self.admin.busy()})

    async def jobs(self, request: Request) -> Response:
        query = request.query_params
        state = _state(query.get("state"), allowed=[s.value for s in State])
        page = await self.admin.jobs(state, queue=_name(query.get("queue"), "queue"),
                                     name=_name(query.get("name"), "name"),
                                     limit=_int(query.get("limit"), "limit", 50, 1, MAX_LIMIT),
                                     offset=_int(query.get("offset"), "offset", 0, 0, 10**9))
        return JSONResponse(page)

    async def job_or_delete(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await self.delete(request)
        return await self.job(request)

    async def job(self, request: Request) -> Response:
        job_id = _job_id(request)
        view = await self.admin.job(job_id)
        return error(404, f"no job {job_id}") if view is None else JSONResponse(view)

    # -- changing ------------------------------------------------------------------------------

    async def pause(self, request: Request) -> Response:
        queue = _path_name(request, "queue")
        await self.admin.pause(queue)
        return JSONResponse({"queue": queue, "paused": True})

    async def resume(self, request: Request) -> Response:
        queue = _path_name(request, "queue")
        await self.admin.resume(queue)
        return JSONResponse({"queue": queue, "paused": False})

    async def purge(self, request: Request) -> Response:
        queue = _path_name(request, "queue")
        return JSONResponse({"queue": queue, "count": await self.admin.purge(queue)})

    async def retry(self, request: Request) -> Response:
        return await self._one(_job_id(request), "retry", self.admin.retry)

    async def requeue(self, request: Request) -> Response:
        return await self._one(_job_id(request), "requeue", self.admin.requeue)

    async def delete(self, request: Request) -> Response:
        return await self._one(_job_id(request), "delete", self.admin.delete)

    async def retry_all(self, request: Request) -> Response:
        query = request.query_params
        state = _state(query.get("state", "dead"), allowed=RETRYABLE)
        assert state is not None
        count = await self.admin.retry_all(state, queue=_name(query.get("queue"), "queue"),
                                           name=_name(query.get("name"), "name"))
        return JSONResponse({"count": count})

    async def requeue_all(self, request: Request) -> Response:
        query = request.query_params
        state = _state(query.get("state"), allowed=REQUEUEABLE)
        count = await self.admin.requeue_all(state, queue=_name(query.get("queue"), "queue"),
                                             name=_name(query.get("name"), "name"))
        return JSONResponse({"count": count})

    async def delete_all(self, request: Request) -> Response:
        query = request.query_params
        state = _state(query.get("state"), allowed=DELETABLE)
        if state is None:
            raise BadRequest("state is required: delete-all never deletes every job at once")
        count = await self.admin.delete_all(state, queue=_name(query.get("queue"), "queue"),
                                            name=_name(query.get("name"), "name"))
        return JSONResponse({"count": count})

    async def bulk(self, request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body(), type=BulkAction)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"the body must be {{\"action\": ..., \"ids\": [...]}}: {exc}"
                             ) from None
        if len(body.ids) > MAX_BULK:
            raise BadRequest(f"at most {MAX_BULK} ids at once")
        act = {"retry": self.admin.retry, "requeue": self.admin.requeue,
               "delete": self.admin.delete}[body.action]
        done: list[str] = []
        skipped: list[str] = []
        for job_id in body.ids:
            (done if await act(job_id) else skipped).append(job_id)
        return JSONResponse({"action": body.action, "done": done, "skipped": skipped})

    async def _one(self, job_id: str, action: str,
                   act: Callable[[str], Awaitable[bool]]) -> Response:
        if await act(job_id):
            return JSONResponse({"id": job_id, "action": action, "done": True})
        view = await self.admin.job(job_id)
        if view is None:
            return error(404, f"no job {job_id}")
        return error(409, f"cannot {action} job {job_id}: it is {view.state}")


class BulkAction(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/jobs/bulk``."""

    action: Literal["retry", "requeue", "delete"]
    ids: list[str]


def _state(value: str | None, *, allowed: list[str] | tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise BadRequest(f"state must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _name(value: str | None, what: str) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_NAME:
        raise BadRequest(f"{what} is longer than {MAX_NAME} characters")
    return value


def _int(value: str | None, what: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{what} must be an integer, not {value!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{what} must be between {low} and {high}")
    return number


def _path_name(request: Request, key: str) -> str:
    value: str = request.path_params[key]
    if not value or len(value) > MAX_NAME:
        raise BadRequest(f"{key} must be 1 to {MAX_NAME} characters")
    return value


def _job_id(request: Request) -> str:
    return _path_name(request, "job_id")
