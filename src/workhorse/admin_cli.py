"""The admin commands of the ``workhorse`` CLI, in go-worker's workerctl words: inspect,
queues, get, jobs, workers, stats, dump, snapshot export|import and completion here; the
moves (retry, requeue, delete, purge, pause, resume, paused, dlq replay) in admin_moves_cli.

Every command works on one store, named by ``--url URL`` or by ``--app MODULE:APP`` (whose
URL is used); with neither, ``$WORKHORSE_URL``, else ``sqlite:///workhorse.db``, as ``App()``
picks. Commands that delete or move jobs are dry runs that print what they would change
unless ``--apply`` is given. Tables are for people; ``--json`` prints JSON for programs.
This module parses and prints; the work is ``app.admin``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import IO, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from workhorse.admin import (
    Admin,
    JobView,
    QueueInfo,
    Stats,
    import_record,
)
from workhorse.app import App
from workhorse.backends.base import State
from workhorse.errors import ConfigurationError, WorkhorseError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_STATES = [s.value for s in State]
_COUNTED = ["ready", "scheduled", "running", "retrying", "dead", "succeeded", "cancelled"]


# -- plumbing ----------------------------------------------------------------------------------


def store_options(command: F) -> F:
    """``--url`` and ``--app``: the store a command works on."""
    command = click.option("--app", "app_spec", metavar="MODULE:APP", default=None,
                           help="Use the store of this app.")(command)
    return click.option("--url", default=None, metavar="URL",
                        help="Store URL [default: $WORKHORSE_URL, else "
                             "sqlite:///workhorse.db].")(command)


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON instead of a table.")(command)


def apply_option(command: F) -> F:
    return click.option("--apply", is_flag=True,
                        help="Make the change (without it: a dry run).")(command)


def open_app(url: str | None, app_spec: str | None) -> App:
    """The app whose store a command works on."""
    if url and app_spec:
        raise click.UsageError("give --url or --app, not both")
    if app_spec:
        from workhorse.cli import load_app  # here: workhorse.cli imports this module

        return load_app(app_spec)
    return App(url)


def run(url: str | None, app_spec: str | None, work: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``work`` on the store's admin, close the store, and turn errors into messages."""
    app = open_app(url, app_spec)

    async def main() -> T:
        try:
            return await work(app.admin)
        finally:
            await app.close()

    try:
        return asyncio.run(main())
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    except (WorkhorseError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def console() -> Console:
    """A console for tables: piped output gets room rather than wrapped columns."""
    out = Console()
    return out if out.is_terminal else Console(width=200)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def when(epoch: float | None) -> str:
    """An epoch time as local ISO 8601, to the second."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds")


def seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def dry_run_note(count: int, what: str) -> str:
    return f"dry run: would {what} {count} job(s); add --apply to do it"


def complete_queue(ctx: click.Context, _param: click.Parameter,
                   incomplete: str) -> list[str]:
    """Shell completion of queue names, read from the store the command line names."""
    try:
        infos = run(ctx.params.get("url"), ctx.params.get("app_spec"),
                    lambda admin: admin.queues())
    except Exception:  # completion must never fail the shell
        return []
    return [q.name for q in infos if q.name.startswith(incomplete)]


def filter_options(states: list[str], default: str | None = None,
                   help_state: str = "Only jobs in this state.") -> Callable[[F], F]:
    """``--id`` (repeatable), ``--state``, ``--queue``, ``--name`` and ``--limit``."""

    def decorate(command: F) -> F:
        for option in reversed([
            click.option("--id", "ids", multiple=True, metavar="ID",
                         help="A job id (repeatable); the filters are then ignored."),
            click.option("--state", type=click.Choice(states), default=default,
                         show_default=default is not None, help=help_state),
            click.option("--queue", default=None, shell_complete=complete_queue,
                         help="Only jobs of this queue."),
            click.option("--name", default=None, help="Only jobs of this handler."),
            click.option("--limit", type=int, default=None, help="At most this many jobs."),
        ]):
            command = option(command)
        return command

    return decorate


# -- reading -----------------------------------------------------------------------------------


def queues_table(queues: list[QueueInfo], title: str | None = None) -> Table:
    table = Table(title=title)
    table.add_column("queue", no_wrap=True)
    for state in _COUNTED:
        table.add_column(state, justify="right")
    table.add_column("latency", justify="right")
    table.add_column("paused")
    for q in queues:
        table.add_row(q.name, *(str(q.counts.get(s, 0)) for s in _COUNTED), seconds(q.latency),
                      "yes" if q.paused else "")
    return table


def stats_table(stats: Stats) -> Table:
    table = Table(title="workhorse stats")
    for column in [*_COUNTED, "queues", "workers", "busy", "paused"]:
        table.add_column(column, justify="right")
    table.add_row(*(str(stats.counts.get(s, 0)) for s in _COUNTED), str(stats.queues),
                  str(stats.workers), str(stats.busy), ", ".join(stats.paused))
    return table


def jobs_table(views: list[JobView], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in ("id", "name", "queue", "state", "attempt", "status", "enqueued", "run at",
                   "error"):
        table.add_column(column, no_wrap=column == "id")
    for v in views:
        table.add_row(v.id, v.name, v.queue, v.state, str(v.attempt),
                      "" if v.status is None else str(v.status), when(v.enqueued_at),
                      when(v.run_at), (v.error or "")[:60])
    return table


@click.command()
@store_options
@click.option("--queue", default=None, shell_complete=complete_queue, help="Only this queue.")
@click.option("--show-ids", is_flag=True, help="List the ids of ready and running jobs.")
@click.option("--peek", default=10, show_default=True, help="How many ids per list.")
@json_option
def inspect(url: str | None, app_spec: str | None, queue: str | None, show_ids: bool,
            peek: int, as_json: bool) -> None:
    """Queues with their counts and latency, totals, and workers."""

    async def work(admin: Admin) -> dict[str, Any]:
        queues = [q for q in await admin.queues() if queue is None or q.name == queue]
        found: dict[str, Any] = {"queues": queues, "stats": await admin.stats(),
                                 "workers": await admin.workers()}
        if show_ids:
            found["ids"] = {q.name: {s: [v.id for v in (await admin.jobs(
                s, queue=q.name, limit=peek)).items] for s in ("ready", "running")}
                for q in queues}
        return found

    found = run(url, app_spec, work)
    if as_json:
        emit_json(found)
        return
    out = console()
    out.print(queues_table(found["queues"], title="queues"))
    stats: Stats = found["stats"]
    out.print("totals: " + " ".join(f"{s}={stats.counts.get(s, 0)}" for s in _COUNTED)
              + f" workers={stats.workers}")
    for q_name, lists in found.get("ids", {}).items():
        for state, ids in lists.items():
            out.print(f"{q_name} {state} ids: {', '.join(ids) or '-'}")
    if found["workers"]:
        table = Table(title="workers")
        for column in ("id", "host", "pid", "concurrency", "queues", "started", "last beat"):
            table.add_column(column, no_wrap=column == "id")
        for w in found["workers"]:
            table.add_row(w.id, w.host, str(w.pid), str(w.concurrency), ",".join(w.queues),
                          when(w.started_at), when(w.last_beat))
        out.print(table)


@click.command()
@store_options
@click.option("--with-counts", is_flag=True, help="Show the counts by state.")
@json_option
def queues(url: str | None, app_spec: str | None, with_counts: bool, as_json: bool) -> None:
    """The queues that have jobs or are paused."""
    found = run(url, app_spec, lambda admin: admin.queues())
    if as_json:
        emit_json(found if with_counts else [q.name for q in found])
    elif with_counts:
        console().print(queues_table(found))
    else:
        for q in found:
            click.echo(q.name + (" (paused)" if q.paused else ""))


@click.command()
@store_options
@click.argument("job_id", metavar="ID")
@json_option
def get(url: str | None, app_spec: str | None, job_id: str, as_json: bool) -> None:
    """One job: args, headers, attempts with their errors, result and timings."""
    view = run(url, app_spec, lambda admin: admin.job(job_id))
    if view is None:
        raise click.ClickException(f"no job {job_id}")
    if as_json:
        emit_json(view)
        return
    out = console()
    table = Table(show_header=False, title=f"job {view.id}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = {
        "name": view.name, "queue": view.queue, "state": view.state,
        "status": "" if view.status is None else str(view.status),
        "args": view.args_error or json.dumps(view.args), "headers": json.dumps(view.headers),
        "priority": str(view.priority), "attempt": str(view.attempt),
        "enqueued": when(view.enqueued_at), "run at": when(view.run_at),
        "started": when(view.started_at), "finished": when(view.finished_at),
        "lease": f"{view.lease_owner} until {when(view.lease_expires_at)}"
        if view.lease_owner else "",
        "check-in": f"{view.checkin} ({when(view.checkin_at)})" if view.checkin else "",
        "result": "" if view.result is None else json.dumps(view.result),
        "error": view.error or "", "unique key": view.unique_key or "",
        "idempotency key": view.idempotency_key or "",
    }
    for field, value in rows.items():
        table.add_row(field, value)
    out.print(table)
    if view.attempts:
        attempts = Table(title="attempts")
        for column in ("#", "status", "started", "finished", "error"):
            attempts.add_column(column)
        for a in view.attempts:
            attempts.add_row(str(a.attempt), "" if a.status is None else str(a.status),
                             when(a.started_at), when(a.finished_at), a.error or "")
        out.print(attempts)
    if view.traceback:
        out.print(view.traceback, markup=False, highlight=False)


@click.command()
@store_options
@click.option("--state", type=click.Choice(_STATES), default=None, help="Only this state.")
@click.option("--queue", default=None, shell_complete=complete_queue, help="Only this queue.")
@click.option("--name", default=None, help="Only this handler.")
@click.option("--limit", default=20, show_default=True)
@click.option("--offset", default=0, show_default=True)
@json_option
def jobs(url: str | None, app_spec: str | None, state: str | None, queue: str | None,
         name: str | None, limit: int, offset: int, as_json: bool) -> None:
    """A page of jobs, oldest first, and how many match."""
    page = run(url, app_spec, lambda admin: admin.jobs(state, queue=queue, name=name,
                                                       limit=limit, offset=offset))
    if as_json:
        emit_json(page)
        return
    shown = f"{offset + 1}-{offset + len(page.items)}" if page.items else "none"
    console().print(jobs_table(page.items, title=f"jobs {shown} of {page.total}"))


@click.command()
@store_options
@json_option
def workers(url: str | None, app_spec: str | None, as_json: bool) -> None:
    """The worker processes, from their heartbeats."""
    found = run(url, app_spec, lambda admin: admin.workers())
    if as_json:
        emit_json(found)
        return
    for w in found:
        click.echo(f"{w.id} host={w.host} pid={w.pid} concurrency={w.concurrency} "
                   f"queues={','.join(w.queues)} last_beat={when(w.last_beat)}")


@click.command()
@store_options
@click.option("--watch", default=None, metavar="INTERVAL",
              help="Print again every INTERVAL (e.g. 2s) until interrupted.")
@click.option("--count", "times", type=int, default=None,
              help="With --watch: stop after this many prints.")
@json_option
def stats(url: str | None, app_spec: str | None, watch: str | None, times: int | None,
          as_json: bool) -> None:
    """Totals by state over all queues, queues, workers and busy jobs."""
    from workhorse.cli import parse_duration

    interval = None if watch is None else parse_duration(watch)

    async def work(admin: Admin) -> None:
        printed = 0
        out = console()
        while True:
            found = await admin.stats()
            if as_json:
                emit_json(found)
            else:
                if interval is not None and out.is_terminal:
                    out.clear()
                out.print(stats_table(found))
            printed += 1
            if interval is None or (times is not None and printed >= times):
                return
            await asyncio.sleep(interval)  # a refresh period, not a wait for a condition

    with contextlib.suppress(KeyboardInterrupt):
        run(url, app_spec, work)


# -- snapshots ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
    else:
        with open(path, "w", encoding="utf-8") as handle:
            yield handle


@click.command()
@store_options
@click.option("--state", type=click.Choice(_STATES), default=None, help="Only this state.")
@click.option("--queue", default=None, shell_complete=complete_queue, help="Only this queue.")
@click.option("--name", default=None, help="Only this handler.")
@click.option("--limit", type=int, default=None, help="At most this many jobs.")
@click.option("--no-payload", is_flag=True, help="Leave out args and results.")
@click.option("--out", "out_path", default="-", show_default=True, help="File to write.")
def dump(url: str | None, app_spec: str | None, state: str | None, queue: str | None,
         name: str | None, limit: int | None, no_payload: bool, out_path: str) -> None:
    """Jobs as JSON lines, in enqueue order (one row per job, as in snapshots)."""

    async def work(admin: Admin) -> int:
        written = 0
        rows = admin.export(payload=not no_payload)
        async with contextlib.aclosing(rows):  # --limit may stop early
            with _output(out_path) as out:
                async for row in rows:
                    if limit is not None and written >= limit:
                        break
                    if row["kind"] != "job" or (state and row["state"] != state) or \
                            (queue and row["queue"] != queue) or (name and row["name"] != name):
                        continue
                    out.write(json.dumps(row) + "\n")
                    written += 1
        return written

    run(url, app_spec, work)


@click.group()
def snapshot() -> None:
    """Export every job (and paused queue) as JSON lines, or import such a file.

    An import may go to another kind of store: sqlite -> redis -> postgres moves a system.
    """


@snapshot.command("export")
@store_options
@click.option("--out", "out_path", default="-", show_default=True, help="File to write.")
def snapshot_export(url: str | None, app_spec: str | None, out_path: str) -> None:
    """Write every job and paused queue as JSON lines."""

    async def work(admin: Admin) -> int:
        count = 0
        with _output(out_path) as out:
            async for row in admin.export():
                out.write(json.dumps(row) + "\n")
                count += row["kind"] == "job"
        return count

    count = run(url, app_spec, work)
    click.echo(f"exported {count} job(s)", err=True)


@snapshot.command("import")
@store_options
@click.option("--in", "in_path", default="-", show_default=True, help="File to read.")
@apply_option
@json_option
def snapshot_import(url: str | None, app_spec: str | None, in_path: str, apply: bool,
                    as_json: bool) -> None:
    """Write the jobs of a snapshot into the store (jobs already there are skipped)."""
    counted = {"jobs": 0, "paused": 0}

    async def rows() -> AsyncIterator[dict[str, Any]]:
        with click.open_file(in_path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {number} is not JSON: {exc}") from None
                kind = row.get("kind", "job") if isinstance(row, dict) else None
                if kind == "job":
                    import_record(row, number)  # a malformed row fails a dry run too
                    counted["jobs"] += 1
                elif kind == "paused":
                    counted["paused"] += 1
                yield row

    async def work(admin: Admin) -> int:
        if apply:
            return await admin.import_(rows())
        async for _ in rows():
            pass
        return 0

    written = run(url, app_spec, work)
    found = {"dry_run": not apply, "rows": counted["jobs"], "imported": written,
             "skipped": counted["jobs"] - written if apply else None,
             "paused": counted["paused"]}
    if as_json:
        emit_json(found)
    elif apply:
        click.echo(f"imported {written} of {counted['jobs']} job(s) "
                   f"({counted['jobs'] - written} already there), "
                   f"{counted['paused']} paused queue(s)")
    else:
        click.echo(f"dry run: would import up to {counted['jobs']} job(s) and "
                   f"{counted['paused']} paused queue(s); add --apply to do it")


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script, e.g. `workhorse completion bash >> ~/.bashrc`."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    assert completer is not None  # every choice has a class
    click.echo(completer(ctx.find_root().command, {}, "workhorse",
                         "_WORKHORSE_COMPLETE").source())


#: The commands this module adds to the ``workhorse`` group.
COMMANDS: list[click.Command] = [
    inspect, queues, get, jobs, workers, stats, dump, snapshot, completion,
]
