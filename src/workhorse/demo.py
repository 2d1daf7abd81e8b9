"""The demo: a small shop on the embedded SQLite store, run by a durable worker."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from workhorse import middleware
from workhorse.app import App
from workhorse.backends.base import State
from workhorse.backoff import constant
from workhorse.errors import JobError
from workhorse.job import Job
from workhorse.status import Status
from workhorse.worker import Worker

DEMO_URL = "sqlite:///workhorse-demo.db"


@dataclasses.dataclass
class Order:
    """Args of the ``charge`` handler."""

    order_id: int
    amount_cents: int


def build_app(url: str) -> App:
    """The demo shop's handlers and middleware."""
    app = App(url)
    app.use(middleware.timing())

    @app.handler("charge", timeout=5)
    async def charge(job: Job[Order]) -> dict[str, Any]:
        await asyncio.sleep(random.uniform(0.001, 0.01))
        if job.args.amount_cents > 50_000:
            raise JobError(Status.FORBIDDEN, "amount over the card limit")
        return {"charged": job.args.amount_cents}

    @app.handler("send_receipt", retries=3, backoff=constant(0.2))
    def send_receipt(job: Job[dict[str, Any]]) -> None:
        time.sleep(0.002)  # a blocking mail client, run in a thread
        if job.attempt <= 2:
            raise JobError(Status.UNAVAILABLE, "mail server busy")  # fails twice, then works

    @app.handler("sync_inventory", retries=2, backoff=constant(0.2))
    async def sync_inventory(job: Job[dict[str, Any]]) -> None:
        raise RuntimeError("warehouse API is down")  # always fails: dead after the retries

    @app.handler("nightly_report")
    async def nightly_report(job: Job[dict[str, Any]]) -> str:
        return "report sent"

    # A queue of its own, so the progress bar can count its runs from queue stats.
    @app.handler("refresh_prices", cron="*/2 * * * * *", queue="cron")  # every 2 seconds
    async def refresh_prices(job: Job[dict[str, Any]]) -> None:
        await asyncio.sleep(0.001)

    return app


def reset_demo_store() -> None:
    """Delete the demo's SQLite file from an earlier run, so each demo starts empty."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"workhorse-demo.db{suffix}").unlink(missing_ok=True)


async def run_demo(count: int = 200, concurrency: int = 8, url: str | None = None,
                   console: Console | None = None) -> dict[str, Counter[State]]:
    """Enqueue a batch, run a worker until it is done, print a table; returns the counts."""
    console = console or Console()
    url = url or DEMO_URL
    app = build_app(url)
    console.print(f"[bold]workhorse demo[/] on {url} (pid {os.getpid()})")
    batch: list[Job[Any]] = [
        Job("charge", args={"order_id": n, "amount_cents": 90_000 if n % 50 == 0 else 1999})
        for n in range(1, count + 1)
    ]
    batch += [Job("send_receipt", args={"order_id": n}) for n in range(1, 6)]
    batch.append(Job("sync_inventory", args={"sku": "A-1"}))
    await app.enqueue_many(batch)
    await app.enqueue("nightly_report", {"day": "today"}, delay=3)
    expected = len(batch) + 1
    cron_runs_wanted = 2

    # The demo draws its own progress and table: no job log lines across them.
    worker = Worker(app, concurrency=concurrency, poll_interval=0.1, log_runs=False)
    started = time.perf_counter()
    batch_seconds: float | None = None
    await worker.start()
    columns = (TextColumn("[bold]processing"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    backend = await app.backend()
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("jobs", total=expected + cron_runs_wanted)
            deadline = time.monotonic() + 50
            while time.monotonic() < deadline:
                # Queue stats: a few counts per poll, not a listing of every job.
                stats = {q.name: q.counts for q in await backend.queue_stats()}
                shop, cron = stats.get("default", {}), stats.get("cron", {})
                finished = shop.get(State.SUCCEEDED, 0) + shop.get(State.DEAD, 0)
                cron_done = min(cron.get(State.SUCCEEDED, 0), cron_runs_wanted)
                progress.update(bar, completed=finished + cron_done)
                if batch_seconds is None and finished >= len(batch):
                    batch_seconds = time.perf_counter() - started
                if finished >= expected and cron_done >= cron_runs_wanted:
                    break
                await asyncio.sleep(0.1)  # a person watches; the worker does not wait on this
    finally:
        await worker.stop()
    counts = await _counts(app)
    retried = Counter(r.name for r in await backend.list_jobs(state=State.SUCCEEDED, limit=10**6)
                      if r.attempt > 1)
    await app.close()

    table = Table(title="what happened")
    for column in ("handler", "succeeded", "succeeded after retries", "dead", "still queued"):
        table.add_column(column, justify="left" if column == "handler" else "right")
    for name, c in sorted(counts.items()):
        live = c[State.READY] + c[State.SCHEDULED] + c[State.RETRYING] + c[State.RUNNING]
        table.add_row(name, str(c[State.SUCCEEDED]), str(retried[name]), str(c[State.DEAD]),
                      str(live))
    console.print(table)
    if batch_seconds is not None:
        console.print(f"throughput: the batch of {len(batch)} jobs (with retries) took "
                      f"{batch_seconds:.2f}s: {len(batch) / batch_seconds:,.0f} jobs/s; "
                      f"{worker.processed} runs in all")
    return counts


async def _counts(app: App) -> dict[str, Counter[State]]:
    backend = await app.backend()
    counts: dict[str, Counter[State]] = {}
    for state in State:
        for record in await backend.list_jobs(state=state, limit=10**6):
            counts.setdefault(record.name, Counter())[state] += 1
    return counts
