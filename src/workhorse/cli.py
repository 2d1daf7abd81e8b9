"""The ``workhorse`` command line: a thin layer over the public API."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any

import click

from workhorse.admin_cli import COMMANDS as ADMIN_COMMANDS
from workhorse.admin_moves_cli import COMMANDS as MOVE_COMMANDS
from workhorse.app import App
from workhorse.grpc.cli import grpc_command
from workhorse.web.cli import ui

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"30s"``, ``"250ms"``, ``"5m"``, ``"1h"``, ``"2d"`` or ``"12.5"``."""
    match = _DURATION.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 5m or 250ms")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def load_object(spec: str, what: str = "app") -> Any:
    """Import ``module:attribute`` (the module found from the current directory too);
    click.BadParameter naming ``what`` if it cannot be loaded."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not of the form module:{what}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise click.BadParameter(f"cannot load the {what} {spec!r}: {exc}") from exc


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (an App, or a function returning one)."""
    target = load_object(spec)
    app = target() if callable(target) and not isinstance(target, App) else target
    if not isinstance(app, App):
        raise click.BadParameter(f"{spec!r} is not a workhorse App")
    return app


@click.group()
@click.version_option(package_name="workhorse")
def main() -> None:
    """workhorse: background jobs with handlers, middleware and statuses."""


main.add_command(ui)
main.add_command(grpc_command)
for _command in [*ADMIN_COMMANDS, *MOVE_COMMANDS]:
    main.add_command(_command)


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("-c", "--concurrency", default=10, show_default=True, help="Jobs at once.")
@click.option("--queues", default=None, help="Queues and weights, e.g. critical=10,default=1.")
@click.option("-p", "--processes", default=1, show_default=True, help="Worker processes.")
@click.option("--lease", default=None, type=float, help="Lease seconds (default 15).")
@click.option("--heartbeat", default=None, type=float,
              help="Seconds between heartbeats that renew leases (default: lease / 3).")
@click.option("--reap-interval", default=None, type=float,
              help="Seconds between reaps of expired leases and silent workers (default 5).")
@click.option("--grace", default=None, type=float,
              help="Seconds running jobs get to finish on SIGTERM before they are released "
                   "to run again (default 30).")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per log record.")
@click.option("--log-payloads", is_flag=True,
              help="Put job args and results in the job log lines (they may hold personal "
                   "data).")
@click.option("--metrics-port", default=None, type=int,
              help="Serve /healthz, /readyz and /metrics on this port (with -p, process i on "
                   "PORT+i).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True,
              help="Address the --metrics-port server binds.")
def worker(app_spec: str, concurrency: int, queues: str | None, processes: int,
           lease: float | None, heartbeat: float | None, reap_interval: float | None,
           grace: float | None, log_level: str, log_format: str, log_payloads: bool,
           metrics_port: int | None, metrics_host: str) -> None:
    """Run a worker for MODULE:APP until SIGINT/SIGTERM (a second signal stops at once)."""
    if processes > 1:
        sys.exit(_run_processes(app_spec, processes))
    _configure_logging(log_level, log_format)
    app = load_app(app_spec)
    from workhorse.backends import redact_url
    from workhorse.worker import DEFAULT_LEASE, DEFAULT_REAP_INTERVAL, Worker

    async def serve() -> None:
        runner = Worker(app, concurrency=concurrency, queues=queues,
                        lease=lease or DEFAULT_LEASE, heartbeat=heartbeat,
                        reap_interval=reap_interval or DEFAULT_REAP_INTERVAL,
                        grace=30.0 if grace is None else grace, log_payloads=log_payloads)
        log = logging.getLogger("workhorse.cli")
        log.info("workhorse worker %s: %s, queues %s, concurrency %d", runner.id,
                 redact_url(app.url), runner.queues, concurrency)
        server = None
        if metrics_port is not None:
            from workhorse.health import serve_worker

            server = serve_worker(runner, metrics_port, metrics_host, metrics=True)
            log.info("serving %s on %s:%d", ", ".join(server.paths), metrics_host, server.port)
        try:
            await runner.run()
        finally:
            if server is not None:
                server.stop()
            await app.close()

    asyncio.run(serve())


def _configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        from workhorse.jsonlog import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _run_processes(app_spec: str, processes: int) -> int:
    """Run ``processes`` single-process workers and pass signals on to them."""
    args = [a for a in sys.argv[1:]]
    for flag in ("-p", "--processes"):
        while flag in args:
            index = args.index(flag)
            del args[index:index + 2]
    args = [a for a in args if not a.startswith("--processes=")]
    children = [subprocess.Popen([sys.executable, "-m", "workhorse", *_nth_port(args, i)])
                for i in range(processes)]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return max(child.wait() for child in children)


def _nth_port(args: list[str], index: int) -> list[str]:
    """``args`` with ``--metrics-port PORT`` made ``PORT + index``: one port per process."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--metrics-port" and i + 1 < len(out):
            out[i + 1] = str(int(out[i + 1]) + index)
        elif arg.startswith("--metrics-port="):
            out[i] = f"--metrics-port={int(arg.split('=', 1)[1]) + index}"
    return out


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.argument("name")
@click.option("--args", "args_json", default="{}", show_default=True, help="Args as JSON.")
@click.option("--in", "delay", default=None, help="Run after a delay, e.g. 30s or 5m.")
@click.option("--at", "at", default=None, help="Run at an ISO 8601 time or epoch seconds.")
@click.option("--queue", default=None, help="Queue (default: the handler's).")
@click.option("--priority", default=None, type=int)
@click.option("--unique", is_flag=True, help="Skip if a live job has the same name and args.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def enqueue(app_spec: str, name: str, args_json: str, delay: str | None, at: str | None,
            queue: str | None, priority: int | None, unique: bool, as_json: bool) -> None:
    """Enqueue job NAME with --args JSON."""
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"--args is not valid JSON: {exc}") from exc
    if delay is not None and at is not None:
        raise click.UsageError("give --in or --at, not both")
    when: float | None = None
    if at is not None:
        try:
            when = float(at)
        except ValueError:
            try:
                when = datetime.fromisoformat(at).timestamp()
            except ValueError as exc:
                raise click.BadParameter(f"--at {at!r} is not a time: {exc}") from exc
    app = load_app(app_spec)

    async def send() -> str | None:
        try:
            ref = await app.enqueue(name, args, queue=queue, priority=priority, at=when,
                                    delay=parse_duration(delay) if delay else None,
                                    unique=unique or None)
            return ref.id if ref else None
        finally:
            await app.close()

    job_id = asyncio.run(send())
    if as_json:
        click.echo(json.dumps({"id": job_id, "duplicate": job_id is None}))
    else:
        click.echo(job_id if job_id else "duplicate: a live job with the same name and args")


@main.command()
@click.argument("url")
def migrate(url: str) -> None:
    """Create or upgrade the store's schema at URL (e.g. postgresql://.../db)."""
    from workhorse.backends import create_backend, redact_url

    async def run() -> int:
        backend = create_backend(url)
        try:
            migrate_schema = getattr(backend, "migrate", None)
            if migrate_schema is None:  # stores without a separate step migrate on open
                await backend.open()
                return 0
            applied: int = await migrate_schema()
            return applied
        finally:
            await backend.close()

    applied = asyncio.run(run())
    click.echo(f"{redact_url(url)}: {applied} migration(s) applied; the schema is current")


@main.command()
@click.option("--jobs", "count", default=200, show_default=True, help="Orders in the batch.")
@click.option("-c", "--concurrency", default=8, show_default=True, help="Concurrent runs.")
@click.option("--url", default=None, help="Store URL (default: sqlite:///workhorse-demo.db).")
def demo(count: int, concurrency: int, url: str | None) -> None:
    """Run a small shop on the embedded SQLite store and show what happened."""
    from workhorse.demo import DEMO_URL, reset_demo_store, run_demo

    if url is None:
        reset_demo_store()
    asyncio.run(run_demo(count=count, concurrency=concurrency, url=url or DEMO_URL))
