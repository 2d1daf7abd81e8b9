"""The web dashboard and its JSON API, as an ASGI app (``pip install workhorse[web]``).

    from workhorse.web import BearerToken, dashboard

    asgi = dashboard(app, auth=BearerToken("s3cret"))   # mount it, or `workhorse ui module:app`

The dashboard is a surface: it reads and steers the store only through ``app.admin``.
Starlette, uvicorn and Jinja2 are imported when a dashboard is built, not when this package is,
so the CLI works without the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workhorse.web.auth import Auth as Auth
from workhorse.web.auth import BasicAuth as BasicAuth
from workhorse.web.auth import BearerToken as BearerToken

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from workhorse.app import App

__all__ = ["Auth", "BasicAuth", "BearerToken", "dashboard"]


def dashboard(app: App, *, auth: Auth | None = None, sample_interval: float = 5.0,
              refresh: float = 3.0, title: str = "workhorse") -> Starlette:
    """An ASGI app showing ``app``'s store: pages at ``/``, the JSON API under ``/api``.

    ``auth`` guards every page and API call (static files and the login page excepted).
    ``sample_interval`` is how often the in-process sampler records counts for the charts;
    ``refresh`` how often open pages poll the API, in seconds.
    """
    try:
        from workhorse.web.server import create_app
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the dashboard needs {exc.name or 'its dependencies'}: "
            "install workhorse[web]") from exc
    return create_app(app, auth=auth, sample_interval=sample_interval, refresh=refresh,
                      title=title)
