"""The dashboard in headless Chromium, served by ``workhorse ui`` beside a ``workhorse worker``.

Both run as subprocesses on one SQLite store, as a user would start them. The screenshots of
every page land in a temporary folder, or in docs/screenshots with UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.web.populate import populate, seed_history
from tests.web.servers import APP, ROOT, free_port, stop, wait_until, workhorse
from tests.web.webapp import make_app

SCREENSHOTS = ROOT / "docs" / "screenshots"
#: The first test may wait for apt-get to install Chromium.
pytestmark = pytest.mark.timeout(600)
#: Longest a page may take to show what the test waits for.
WAIT_MS = 10_000


@dataclasses.dataclass
class System:
    base: str
    url: str
    ids: dict[str, str]

    def enqueue(self, name: str, args: dict[str, object]) -> str:
        async def send() -> str:
            app = make_app(self.url)
            try:
                return (await app.enqueue(name, args)).id
            finally:
                await app.close()

        # In a thread of its own: Playwright's sync API keeps an event loop in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, send()).result()

    def job(self, job_id: str) -> dict[str, object]:
        reply = httpx.get(f"{self.base}/api/jobs/{job_id}", timeout=5)
        reply.raise_for_status()
        return dict(reply.json())


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    url = "sqlite:///" + str(tmp_path_factory.mktemp("browser") / "browser.db")

    async def seed() -> dict[str, str]:
        app = make_app(url)
        try:
            ids = await populate(app)
            await seed_history(app)
            ids["busy"] = (await app.enqueue("slow", {"steps": 600, "pause": 0.1})).id
            return ids
        finally:
            await app.close()

    ids = asyncio.run(seed())
    port = free_port()
    ui = workhorse(url, "ui", APP, "--port", str(port), "--refresh", "1",
                   "--sample-interval", "1", "--log-level", "warning")
    worker = workhorse(url, "worker", APP, "-c", "4", "--queues", "default,mail",
                       "--grace", "1", "--log-level", "WARNING")
    base = f"http://127.0.0.1:{port}"
    try:
        # Up once the worker has beaten and taken the long job.
        wait_until(lambda: httpx.get(f"{base}/api/jobs/{ids['busy']}").json()["state"]
                   == "running", "the dashboard and the worker")
        yield System(base=base, url=url, ids=ids)
    finally:
        stop(worker, ui)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page that fails the test on any script error or failed request."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" else None)
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()
    assert problems == []


def loaded(page: Page, path: str, base: str) -> None:
    page.goto(base + path)
    page.wait_for_selector("body[data-loaded=true]")


def shot(page: Page, name: str, tmp_path: Path, *, full_page: bool = False) -> None:
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


def test_every_page_shows_the_store(system: System, page: Page, tmp_path: Path) -> None:
    ids = system.ids
    loaded(page, "/", system.base)
    expect(page.locator("[data-card=dead] .value")).not_to_have_text("0")
    expect(page.locator("tr[data-queue=mail]")).to_contain_text("active")
    # The charts are drawn from the hour of history and the live samples.
    expect(page.locator("#chart-throughput rect").first).to_be_visible()
    assert int(page.locator("#chart-throughput").get_attribute("data-total") or 0) > 300
    expect(page.locator("#chart-failures rect").first).to_be_visible()
    page.wait_for_selector("#chart-latency circle", state="attached")
    shot(page, "overview", tmp_path)

    loaded(page, "/workers", system.base)
    expect(page.locator("#workers tbody tr")).not_to_have_count(0)
    busy = page.locator(f"#busy tr[data-id='{ids['busy']}']")
    expect(busy).to_contain_text("step ")
    shot(page, "workers", tmp_path)

    loaded(page, "/scheduled", system.base)
    expect(page.locator(f"tr[data-id='{ids['scheduled']}']")).to_contain_text("in 59m")
    shot(page, "scheduled", tmp_path)

    loaded(page, "/retrying", system.base)
    expect(page.locator(f"tr[data-id='{ids['retrying']}']")).to_contain_text(
        "the service is down")
    shot(page, "retrying", tmp_path)

    loaded(page, "/dead", system.base)
    row = page.locator(f"tr[data-id='{ids['dead']}']")
    # Markup in the store is shown as text.
    expect(row).to_contain_text("no such address: <b>nobody</b>@example")
    expect(page.locator("#pager")).to_contain_text("of ")
    shot(page, "dead", tmp_path)

    loaded(page, "/jobs?state=succeeded", system.base)
    expect(page.locator("#jobs tbody tr").first).to_contain_text("succeeded")
    shot(page, "jobs", tmp_path)

    loaded(page, f"/jobs/{ids['retrying']}", system.base)
    expect(page.locator("[data-fact=state]")).to_have_text("retrying")
    expect(page.locator("#attempts")).to_contain_text("the service is down")
    page.locator("#attempts summary").first.click()
    expect(page.locator("#attempts pre").first).to_contain_text("RuntimeError")
    shot(page, "job", tmp_path, full_page=True)


def test_search_finds_a_job_by_id(system: System, page: Page) -> None:
    loaded(page, "/", system.base)
    page.fill("header input[name=q]", system.ids["succeeded"])
    page.press("header input[name=q]", "Enter")
    page.wait_for_url(f"**/jobs/{system.ids['succeeded']}")
    expect(page.locator("#result")).to_contain_text('"hello": "Ada"')


def test_retry_a_dead_job_and_see_it_succeed(system: System, page: Page) -> None:
    job_id = system.ids["fail_once"]
    loaded(page, "/dead?name=fail_once", system.base)
    row = page.locator(f"tr[data-id='{job_id}']")
    expect(row).to_contain_text("the first attempt always fails")
    row.get_by_role("button", name="Retry").click()
    expect(page.locator("#flash")).to_contain_text(f"Retry: {job_id}")
    expect(row).to_have_count(0)  # gone from the dead list
    loaded(page, f"/jobs/{job_id}", system.base)
    expect(page.locator("[data-fact=state]")).to_have_text("succeeded")
    expect(page.locator("#result")).to_contain_text('"attempt": 2')
    expect(page.locator("#attempts tbody tr")).to_have_count(2)


def test_bulk_delete_from_the_dead_list(system: System, page: Page) -> None:
    loaded(page, "/dead?name=broken", system.base)
    row = page.locator(f"tr[data-id='{system.ids['dead']}']")
    row.locator("input[type=checkbox]").check()
    expect(page.locator("#selected")).to_have_text("1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete selected").click()
    expect(page.locator("#flash")).to_contain_text("Delete: 1 done")
    expect(row).to_have_count(0)
    assert httpx.get(f"{system.base}/api/jobs/{system.ids['dead']}").status_code == 404


def test_pause_a_queue_and_the_worker_stops_taking_its_jobs(system: System,
                                                            page: Page) -> None:
    loaded(page, "/", system.base)
    mail = page.locator("tr[data-queue=mail]")
    mail.get_by_role("button", name="Pause").click()
    expect(mail).to_contain_text("paused")
    expect(mail.get_by_role("button", name="Resume")).to_be_visible()

    held = system.enqueue("send_email", {"to": "held@example.com"})
    control = system.enqueue("greet", {"name": "control"})
    # The worker is alive and taking jobs of its other queue...
    wait_until(lambda: system.job(control)["state"] == "succeeded", "the control job")
    time.sleep(1.5)  # ...longer than its poll interval, and the paused queue's job waits.
    assert system.job(held)["state"] == "ready"
    expect(mail.locator("td").nth(1)).not_to_have_text("0")  # ready count on the page

    mail.get_by_role("button", name="Resume").click()
    expect(mail).to_contain_text("active")
    wait_until(lambda: system.job(held)["state"] == "succeeded", "the resumed job")
