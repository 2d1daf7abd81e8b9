"""``create_app``: the dashboard as one Starlette app, with no module globals."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from workhorse.errors import StoreError
from workhorse.web.api import Api, error
from workhorse.web.auth import AuthMiddleware, BearerToken, relative_path
from workhorse.web.pages import Pages
from workhorse.web.sampler import Sampler

if TYPE_CHECKING:
    from workhorse.app import App
    from workhorse.web.auth import Auth


def create_app(app: App, *, auth: Auth | None = None, sample_interval: float = 5.0,
               refresh: float = 3.0, title: str = "workhorse") -> Starlette:
    """The dashboard of ``app``: see ``workhorse.web.dashboard``."""
    admin = app.admin
    sampler = Sampler(admin, interval=sample_interval)
    secured = None if auth is None else "bearer" if isinstance(auth, BearerToken) else "basic"
    api = Api(admin, sampler, secured=secured)
    pages = Pages(admin, auth=auth, refresh=refresh, title=title)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        sampler.ensure_running()
        try:
            yield
        finally:
            await sampler.stop()

    middleware = [] if auth is None else [Middleware(AuthMiddleware, auth=auth)]
    web = Starlette(routes=[*api.routes(), *pages.routes()], middleware=middleware,
                    lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, StoreError: store_error})
    web.state.sampler = sampler
    return web


async def http_error(request: Request, exc: Exception) -> Response:
    """Errors of the routing itself (404, 405): JSON under /api, plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if relative_path(request.scope).startswith("/api/"):
        response: Response = error(exc.status_code, exc.detail)
        response.headers.update(headers)
        return response
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=headers)


async def store_error(request: Request, exc: Exception) -> Response:
    """The store is down or unreachable: a 503 that says so (open pages retry on their own)."""
    message = f"the store is unavailable: {exc}"
    if relative_path(request.scope).startswith("/api/"):
        return error(503, message)
    return PlainTextResponse(message, status_code=503)
