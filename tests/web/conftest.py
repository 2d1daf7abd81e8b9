"""Fixtures of the dashboard tests: stores with jobs in every state, the ASGI app, Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

import workhorse as wh
from tests.conformance.conftest import POSTGRES_URL, REDIS_URL, cleanup
from tests.web.populate import populate
from tests.web.webapp import make_app
from workhorse.web import dashboard

CHROMIUM = "/usr/bin/chromium"


def store_url(kind: str, tmp_path: Path) -> str:
    """A private, empty store of ``kind``: a temp SQLite file, or a fresh Redis namespace or
    PostgreSQL schema on the local servers."""
    private = f"whweb_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        return "sqlite:///" + str(tmp_path / "web.db")
    if kind == "redis":
        return f"{REDIS_URL}?namespace={private}"
    return f"{POSTGRES_URL}?schema={private}"


# Server stores are always collected, so an unreachable server fails the run, never skips.
@pytest.fixture(params=["sqlite", "redis", "postgresql"])
async def seeded(request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[tuple[wh.App, dict[str, str]]]:
    """An app on a private store holding jobs in every state, and one id per state."""
    url = store_url(request.param, tmp_path)
    app = make_app(url)
    try:
        yield app, await populate(app)
    finally:
        await app.close()
        await cleanup(url)


@pytest.fixture
async def web(seeded: tuple[wh.App, dict[str, str]]) -> AsyncIterator[Starlette]:
    """The dashboard of ``seeded``'s app (sampling only when a test asks)."""
    app, _ = seeded
    web = dashboard(app, sample_interval=3600)
    try:
        yield web
    finally:
        await web.state.sampler.stop()


@pytest.fixture
async def client(web: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``web``, served in this event loop."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web),
                                 base_url="http://dash") as http:
        yield http


@pytest.fixture
async def empty_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the dashboard of an app on an empty SQLite store."""
    app = make_app(store_url("sqlite", tmp_path))
    web = dashboard(app, sample_interval=3600)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web),
                                     base_url="http://dash") as http:
            yield http
    finally:
        await web.state.sampler.stop()
        await app.close()


@pytest.fixture
def ids(seeded: tuple[wh.App, dict[str, str]]) -> dict[str, str]:
    return seeded[1]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing and we are root.

    Under CI=true not getting it fails the test; elsewhere the browser tests are skipped.
    """
    if not os.path.exists(CHROMIUM) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing and could not be installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM
