"""The demo: a small shop's jobs run through a middleware chain, in-process."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from workhorse import middleware
from workhorse.app import App
from workhorse.errors import JobError
from workhorse.job import Job
from workhorse.local import LocalWorker
from workhorse.status import Status


@dataclasses.dataclass
class Order:
    """Args of the ``charge`` handler."""

    order_id: int
    amount_cents: int


def build_app() -> App:
    """The demo shop: three handlers and the logging-free middleware chain."""
    app = App("memory://")
    app.use(middleware.timing(), middleware.recover())

    @app.handler("charge", timeout=2)
    async def charge(job: Job[Order]) -> dict[str, Any]:
        await asyncio.sleep(random.uniform(0.005, 0.03))
        if job.args.amount_cents > 50_000:
            raise JobError(Status.FORBIDDEN, "amount over the card limit")
        job.ctx.set("customer", job.args.order_id % 7)
        return {"charged": job.args.amount_cents}

    @app.handler("send_receipt")
    def send_receipt(job: Job[dict[str, Any]]) -> None:
        time.sleep(random.uniform(0.005, 0.02))  # a blocking client, run in a thread
        if job.args["order_id"] % 9 == 0:
            job.ctx.status = Status.NO_RESPONSE  # no e-mail on file: nothing to do

    @app.handler("sync_inventory", timeout=0.05)
    async def sync_inventory(job: Job[dict[str, Any]]) -> None:
        await asyncio.sleep(0.2 if job.args["slow"] else 0.01)

    return app


def demo_jobs(count: int) -> list[Job[Any]]:
    """A batch of orders, receipts and inventory syncs, a few of which fail on purpose."""
    jobs: list[Job[Any]] = []
    for order_id in range(1, count + 1):
        amount = 90_000 if order_id % 13 == 0 else random.randint(500, 20_000)
        jobs.append(Job("charge", args={"order_id": order_id, "amount_cents": amount}))
        jobs.append(Job("send_receipt", args={"order_id": order_id}))
    jobs.append(Job("charge", args={"order_id": "not a number", "amount_cents": 1}))
    jobs.extend(Job("sync_inventory", args={"slow": i == 0}) for i in range(5))
    return jobs


async def run_demo(
    count: int = 60, concurrency: int = 8, console: Console | None = None
) -> Counter[Status]:
    """Run the demo and print a table of what happened; returns the count per status."""
    console = console or Console()
    app = build_app()
    jobs = demo_jobs(count)
    outcomes: Counter[tuple[str, Status]] = Counter()
    started = time.perf_counter()
    columns = (TextColumn("[bold]running jobs"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("jobs", total=len(jobs))
        async with LocalWorker(app, concurrency=concurrency) as worker:
            tasks = [await worker.perform(job) for job in jobs]
            for finished in asyncio.as_completed(tasks):
                job = await finished
                outcomes[(job.name, job.status)] += 1
                progress.advance(bar)
    elapsed = time.perf_counter() - started

    table = Table(title=f"{len(jobs)} jobs in {elapsed:.2f}s ({len(jobs) / elapsed:,.0f} jobs/s)")
    table.add_column("handler")
    table.add_column("status", justify="right")
    table.add_column("meaning")
    table.add_column("jobs", justify="right")
    for (name, status), number in sorted(outcomes.items()):
        table.add_row(name, str(int(status)), status.phrase, str(number))
    console.print(table)
    by_status: Counter[Status] = Counter()
    for (_, status), number in outcomes.items():
        by_status[status] += number
    return by_status
