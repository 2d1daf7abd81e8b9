"""The ``workhorse`` command line."""

from __future__ import annotations

import asyncio

import click


@click.group()
@click.version_option(package_name="workhorse")
def main() -> None:
    """workhorse: background jobs with handlers, middleware and statuses."""


@main.command()
@click.option("--jobs", "count", default=60, show_default=True, help="Orders in the batch.")
@click.option("-c", "--concurrency", default=8, show_default=True, help="Concurrent runs.")
def demo(count: int, concurrency: int) -> None:
    """Run a small shop's jobs through a middleware chain and show what happened."""
    from workhorse.demo import run_demo

    asyncio.run(run_demo(count=count, concurrency=concurrency))
