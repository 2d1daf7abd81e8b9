"""The HTML pages, search, auth and mounting, over HTTP (the browser tests drive the JS)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.routing import Mount

import workhorse as wh
from tests.web.webapp import make_app
from workhorse.cli import main
from workhorse.web import BasicAuth, BearerToken, dashboard
from workhorse.web.auth import COOKIE, parse_basic

PAGES = ["/", "/workers", "/scheduled", "/retrying", "/dead", "/jobs", "/jobs?state=ready"]


@pytest.fixture
async def sqlite_app(tmp_path: Path) -> AsyncIterator[tuple[wh.App, str]]:
    app = make_app("sqlite:///" + str(tmp_path / "pages.db"))
    job = await app.enqueue("greet", {"name": "Ada"})
    yield app, job.id
    await app.close()


@contextlib.asynccontextmanager
async def serve(web: Starlette, *inner: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``web``; the samplers of ``web`` and the ``inner`` dashboards stop after."""
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web),
                                     base_url="http://dash") as http:
            yield http
    finally:
        for dash in (web, *inner):
            sampler = getattr(dash.state, "sampler", None)
            if sampler is not None:
                await sampler.stop()


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_renders_its_shell(empty_client: httpx.AsyncClient,
                                            path: str) -> None:
    page = await empty_client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/static/dashboard.js"' in page.text and 'data-base=""' in page.text
    assert (await empty_client.get("/static/dashboard.js")).status_code == 200
    assert (await empty_client.get("/static/dashboard.css")).status_code == 200


async def test_job_page_and_search(sqlite_app: tuple[wh.App, str]) -> None:
    app, job_id = sqlite_app
    async with serve(dashboard(app)) as http:
        page = await http.get(f"/jobs/{job_id}")
        assert page.status_code == 200 and f'data-job="{job_id}"' in page.text
        found = await http.get("/search", params={"q": f"  {job_id} "})
        assert found.status_code == 303 and found.headers["location"] == f"/jobs/{job_id}"
        missing = await http.get("/search", params={"q": "0123abc"})
        assert missing.status_code == 404 and "No job 0123abc" in missing.text
        # What a URL carries is shown as text, never as markup.
        evil = await http.get("/jobs/<img src=x onerror=alert(1)>")
        assert evil.status_code == 404
        assert "<img src" not in evil.text and "&lt;img src=x onerror=alert(1)&gt;" in evil.text


async def test_bearer_token_guards_pages_and_api(sqlite_app: tuple[wh.App, str]) -> None:
    app, _ = sqlite_app
    async with serve(dashboard(app, auth=BearerToken("s3cret"))) as http:
        denied = await http.get("/api/stats")
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
        assert (await http.post("/api/queues/mail/pause")).status_code == 401
        assert (await http.get("/api/stats",
                               headers={"Authorization": "Bearer wrong"})).status_code == 401
        ok = await http.get("/api/stats", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        document = (await http.get("/api/openapi.json",
                                   headers={"Authorization": "Bearer s3cret"})).json()
        assert document["security"] == [{"bearer": []}]
        # A browser is sent to the login page, and the token buys it a session cookie.
        page = await http.get("/dead")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/dead"
        assert (await http.get("/static/dashboard.css")).status_code == 200
        wrong = await http.post("/login", data={"token": "nope", "next": "/dead"})
        assert wrong.status_code == 401 and "not right" in wrong.text
        login = await http.post("/login", data={"token": "s3cret", "next": "/dead"})
        assert login.status_code == 303 and login.headers["location"] == "/dead"
        cookie = login.cookies[COOKIE]
        assert "s3cret" not in cookie and "httponly" in login.headers["set-cookie"].lower()
        assert (await http.get("/dead")).status_code == 200
        assert (await http.get("/api/stats")).status_code == 200
        # Never sent off-site after logging in.
        away = await http.post("/login", data={"token": "s3cret", "next": "//evil.example/"})
        assert away.headers["location"] == "/"
        await http.get("/logout")
        http.cookies.clear()
        assert (await http.get("/api/stats")).status_code == 401


async def test_basic_auth_guards_pages_and_api(sqlite_app: tuple[wh.App, str]) -> None:
    app, _ = sqlite_app
    async with serve(dashboard(app, auth=BasicAuth("ops", "pa:ss"))) as http:
        for path in ("/", "/api/stats"):
            denied = await http.get(path)
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"].startswith("Basic")
        assert (await http.get("/", auth=("ops", "wrong"))).status_code == 401
        bad = {"Authorization": "Basic !!notbase64"}
        assert (await http.get("/api/stats", headers=bad)).status_code == 401
        assert (await http.get("/", auth=("ops", "pa:ss"))).status_code == 200
        token = base64.b64encode(b"ops:pa:ss").decode()
        ok = await http.get("/api/stats", headers={"Authorization": f"Basic {token}"})
        assert ok.status_code == 200


async def test_mounted_under_a_prefix(sqlite_app: tuple[wh.App, str]) -> None:
    app, job_id = sqlite_app
    inner = dashboard(app, auth=BearerToken("t"))
    site = Starlette(routes=[Mount("/ops/jobs", app=inner)])
    async with serve(site, inner) as http:
        page = await http.get("/ops/jobs/dead")
        assert page.headers["location"] == "/ops/jobs/login?next=/dead"
        login = await http.post("/ops/jobs/login", data={"token": "t", "next": "/dead"})
        assert login.headers["location"] == "/ops/jobs/dead"
        assert "path=/ops/jobs" in login.headers["set-cookie"].lower()
        page = await http.get("/ops/jobs/dead")
        assert 'data-base="/ops/jobs"' in page.text
        assert 'href="/ops/jobs/static/dashboard.css"' in page.text
        stats = await http.get("/ops/jobs/api/stats")
        assert stats.json()["counts"]["ready"] == 1
        found = await http.get("/ops/jobs/search", params={"q": job_id})
        assert found.headers["location"] == f"/ops/jobs/jobs/{job_id}"
        document = (await http.get("/ops/jobs/api/openapi.json")).json()
        assert document["servers"] == [{"url": "/ops/jobs"}]


def test_auth_settings_are_checked() -> None:
    assert parse_basic("a:b:c") == BasicAuth("a", "b:c")
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        parse_basic("nocolon")
    with pytest.raises(ValueError, match="must not be empty"):
        BearerToken("")


def test_ui_command_is_registered_and_checks_its_options() -> None:
    runner = CliRunner()
    assert "--port" in runner.invoke(main, ["ui", "--help"]).output
    both = runner.invoke(main, ["ui", "x:app", "--token", "t", "--basic", "a:b"])
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(main, ["ui", "x:app", "--basic", "nocolon"])
    assert bad.exit_code == 2 and "USER:PASSWORD" in bad.output


async def test_a_store_that_is_away_is_a_503() -> None:
    app = make_app("redis://127.0.0.1:1/0?namespace=whweb_away")
    try:
        async with serve(dashboard(app)) as http:
            reply = await http.get("/api/stats")
            assert reply.status_code == 503
            assert reply.json()["error"].startswith("the store is unavailable")
            page = await http.get("/jobs/0123")
            assert page.status_code == 503 and "unavailable" in page.text
    finally:
        await app.close()
