"""The dashboard's HTML pages: shells that ``static/dashboard.js`` fills from the JSON API.

The server renders only the layout, the navigation and what a page is about (a state, a job
id); every number and row comes from ``/api``, so the pages show exactly what API clients see.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from workhorse.web.auth import COOKIE, BasicAuth, BearerToken

if TYPE_CHECKING:
    from workhorse.admin import Admin
    from workhorse.web.auth import Auth

HERE = Path(__file__).resolve().parent
#: The list pages of the navigation, by URL path: the state each one shows.
LISTS = {"scheduled": "scheduled", "retrying": "retrying", "dead": "dead"}


class Pages:
    """The page endpoints of one dashboard."""

    def __init__(self, admin: Admin, *, auth: Auth | None, refresh: float, title: str) -> None:
        self.admin = admin
        self.auth = auth
        self.refresh = refresh
        self.title = title
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    def routes(self) -> list[BaseRoute]:
        """The routes, relative to the dashboard's root."""
        lists: list[BaseRoute] = [Route(f"/{path}", self._list_page(state), methods=["GET"])
                                  for path, state in LISTS.items()]
        return [
            Route("/", self.overview, methods=["GET"]),
            Route("/workers", self.workers, methods=["GET"]),
            *lists,
            Route("/jobs", self.jobs, methods=["GET"]),
            Route("/jobs/{job_id}", self.job, methods=["GET"]),
            Route("/search", self.search, methods=["GET"]),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["GET", "POST"]),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]

    def render(self, request: Request, template: str, status: int = 200,
               **context: Any) -> Response:
        """``template`` with what every page needs: the base URL, the refresh period."""
        base = request.scope.get("root_path", "").rstrip("/")
        return self.templates.TemplateResponse(
            request, template, {"base": base, "refresh": self.refresh, "title": self.title,
                                "token_auth": isinstance(self.auth, BearerToken),
                                **context},
            status_code=status)

    async def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", page="overview")

    async def workers(self, request: Request) -> Response:
        return self.render(request, "workers.html", page="workers")

    def _list_page(self, state: str) -> Any:
        async def page(request: Request) -> Response:
            return self.render(request, "jobs.html", page=state, state=state)

        page.__name__ = f"{state}_page"
        return page

    async def jobs(self, request: Request) -> Response:
        state = request.query_params.get("state", "")
        return self.render(request, "jobs.html", page="jobs", state=state)

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        found = len(job_id) <= 512 and await self.admin.job(job_id) is not None
        return self.render(request, "job.html", status=200 if found else 404, page="job",
                           job_id=job_id, found=found)

    async def search(self, request: Request) -> Response:
        """Go to the job whose id was typed in the search box, or say there is none."""
        query = request.query_params.get("q", "").strip()
        base = request.scope.get("root_path", "").rstrip("/")
        if query and len(query) <= 512 and await self.admin.job(query) is not None:
            return RedirectResponse(f"{base}/jobs/{quote(query, safe='')}", status_code=303)
        return self.render(request, "search.html", status=404, page="search", query=query)

    async def login(self, request: Request) -> Response:
        """With a bearer token: a form that trades the token for a session cookie."""
        base = request.scope.get("root_path", "").rstrip("/")
        target = _safe_next(request.query_params.get("next", "/"))
        if not isinstance(self.auth, BearerToken):
            return RedirectResponse(f"{base}{target}", status_code=303)
        if request.method == "GET":
            return self.render(request, "login.html", page="login", next=target, failed=False)
        # parse_qs, not request.form(): that needs python-multipart for one text field.
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = form.get("token", [""])[0]
        target = _safe_next(form.get("next", [target])[0])
        if not self.auth.check({"authorization": f"Bearer {token}"}):
            return self.render(request, "login.html", status=401, page="login", next=target,
                               failed=True)
        response = RedirectResponse(f"{base}{target}", status_code=303)
        response.set_cookie(COOKIE, self.auth.session(), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path=base or "/")
        return response

    async def logout(self, request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        if isinstance(self.auth, BasicAuth):  # the browser keeps basic credentials itself
            return RedirectResponse(f"{base}/", status_code=303)
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(COOKIE, path=base or "/")
        return response


def _safe_next(target: str) -> str:
    """A path below the dashboard to go to after login, never another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
