"""The admin commands that move or delete jobs, and pause queues: retry, requeue, delete,
purge, pause, resume, paused and dlq replay (see admin_cli for the store options and the
dry-run rule: nothing changes without ``--apply``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click

from workhorse.admin import DELETABLE, REQUEUEABLE, RETRYABLE, Admin
from workhorse.admin_cli import (
    apply_option,
    complete_queue,
    dry_run_note,
    emit_json,
    filter_options,
    json_option,
    run,
    store_options,
)
from workhorse.backends.base import State


def _by_ids(ids: tuple[str, ...], allowed: frozenset[State], verb: str, apply: bool,
            act: Callable[[Admin, str], Awaitable[bool]]) -> Callable[[Admin], Awaitable[Any]]:
    """The work of a move on explicit ids: a report per id, made or (dry run) foreseen."""

    async def work(admin: Admin) -> dict[str, Any]:
        report = []
        for job_id in ids:
            view = await admin.job(job_id)
            if view is None:
                report.append({"id": job_id, "state": None, "done": False, "why": "no such job"})
                continue
            if State(view.state) not in allowed:
                report.append({"id": job_id, "state": view.state, "done": False,
                               "why": f"a {view.state} job cannot be {verb}"})
                continue
            done = await act(admin, job_id) if apply else True
            report.append({"id": job_id, "state": view.state, "done": done,
                           "why": None if done else "changed meanwhile, or its unique key is "
                                                    "held by a live job"})
        return {"dry_run": not apply, "count": sum(r["done"] for r in report), "jobs": report}

    return work


def _print_ids(found: dict[str, Any], verb: str, past: str, as_json: bool) -> None:
    if as_json:
        emit_json(found)
        return
    for row in found["jobs"]:
        if row["done"]:
            action = f"would be {past}" if found["dry_run"] else past
            click.echo(f"{row['id']}: {row['state']}, {action}")
        else:
            click.echo(f"{row['id']}: not {past}: {row['why']}")
    if found["dry_run"]:
        click.echo(dry_run_note(found["count"], verb))
    else:
        click.echo(f"{past} {found['count']} job(s)")


def _bulk(states: list[State], queue: str | None, name: str | None, limit: int | None,
          apply: bool, act: Callable[[Admin], Awaitable[int]]
          ) -> Callable[[Admin], Awaitable[dict[str, Any]]]:
    """The work of a move on every job matching filters: how many it moved, or would."""

    async def work(admin: Admin) -> dict[str, Any]:
        if apply:
            count = await act(admin)
        else:
            count = 0
            for state in states:
                count += (await admin.jobs(state, queue=queue, name=name, limit=0)).total
            count = count if limit is None else min(count, limit)
        return {"dry_run": not apply, "count": count, "states": [s.value for s in states],
                "queue": queue, "name": name}

    return work


def _print_bulk(found: dict[str, Any], verb: str, past: str, as_json: bool) -> None:
    if as_json:
        emit_json(found)
        return
    where = "".join(f" {k} {found[k]}" for k in ("queue", "name") if found[k])
    states = "/".join(found["states"])
    if found["dry_run"]:
        click.echo(f"dry run: would {verb} {found['count']} {states} job(s){where}; "
                   "add --apply to do it")
    else:
        click.echo(f"{past} {found['count']} {states} job(s){where}")


@click.command()
@store_options
@filter_options([s.value for s in State if s in RETRYABLE], default="dead",
                help_state="Retry the jobs in this state.")
@apply_option
@json_option
def retry(url: str | None, app_spec: str | None, ids: tuple[str, ...], state: str,
          queue: str | None, name: str | None, limit: int | None, apply: bool,
          as_json: bool) -> None:
    """Run dead (or retrying, cancelled) jobs again now, their attempts kept."""
    if ids:
        found = run(url, app_spec, _by_ids(ids, RETRYABLE, "retried", apply,
                                           lambda admin, job_id: admin.retry(job_id)))
        _print_ids(found, "retry", "retried", as_json)
        return
    work = _bulk([State(state)], queue, name, limit, apply,
                 lambda admin: admin.retry_all(state, queue=queue, name=name, limit=limit))
    _print_bulk(run(url, app_spec, work), "retry", "retried", as_json)


@click.command()
@store_options
@filter_options([s.value for s in State if s in REQUEUEABLE],
                help_state="Only this state [default: scheduled and retrying].")
@apply_option
@json_option
def requeue(url: str | None, app_spec: str | None, ids: tuple[str, ...], state: str | None,
            queue: str | None, name: str | None, limit: int | None, apply: bool,
            as_json: bool) -> None:
    """Make scheduled and retrying jobs due now."""
    if ids:
        found = run(url, app_spec, _by_ids(ids, REQUEUEABLE, "requeued", apply,
                                           lambda admin, job_id: admin.requeue(job_id)))
        _print_ids(found, "requeue", "requeued", as_json)
        return
    states = sorted(REQUEUEABLE) if state is None else [State(state)]
    work = _bulk(states, queue, name, limit, apply,
                 lambda admin: admin.requeue_all(state, queue=queue, name=name, limit=limit))
    _print_bulk(run(url, app_spec, work), "requeue", "requeued", as_json)


@click.command()
@store_options
@filter_options([s.value for s in State if s in DELETABLE],
                help_state="Delete the jobs in this state (needed without --id).")
@apply_option
@json_option
def delete(url: str | None, app_spec: str | None, ids: tuple[str, ...], state: str | None,
           queue: str | None, name: str | None, limit: int | None, apply: bool,
           as_json: bool) -> None:
    """Delete jobs in any state but running (cancel those instead)."""
    if ids:
        found = run(url, app_spec, _by_ids(ids, DELETABLE, "deleted", apply,
                                           lambda admin, job_id: admin.delete(job_id)))
        _print_ids(found, "delete", "deleted", as_json)
        return
    if state is None:
        raise click.UsageError("give --id, or --state to delete every job in that state")
    work = _bulk([State(state)], queue, name, limit, apply,
                 lambda admin: admin.delete_all(state, queue=queue, name=name, limit=limit))
    _print_bulk(run(url, app_spec, work), "delete", "deleted", as_json)


@click.command()
@store_options
@click.argument("queues_", metavar="QUEUE...", nargs=-1, required=True,
                shell_complete=complete_queue)
@apply_option
@json_option
def purge(url: str | None, app_spec: str | None, queues_: tuple[str, ...], apply: bool,
          as_json: bool) -> None:
    """Delete every ready job of the queues."""

    async def work(admin: Admin) -> dict[str, int]:
        counts: dict[str, int] = {}
        for queue in queues_:
            if apply:
                counts[queue] = await admin.purge(queue)
            else:
                counts[queue] = (await admin.jobs("ready", queue=queue, limit=0)).total
        return counts

    counts = run(url, app_spec, work)
    if as_json:
        emit_json({"dry_run": not apply, "count": sum(counts.values()), "queues": counts})
        return
    for queue, count in counts.items():
        if apply:
            click.echo(f"{queue}: purged {count} ready job(s)")
        else:
            click.echo(f"{queue}: dry run: would purge {count} ready job(s); "
                       "add --apply to do it")


@click.command()
@store_options
@click.argument("queues_", metavar="QUEUE...", nargs=-1, required=True,
                shell_complete=complete_queue)
def pause(url: str | None, app_spec: str | None, queues_: tuple[str, ...]) -> None:
    """Stop workers from taking jobs of the queues (running ones finish)."""

    async def work(admin: Admin) -> None:
        for queue in queues_:
            await admin.pause(queue)

    run(url, app_spec, work)
    click.echo("paused: " + ", ".join(queues_))


@click.command()
@store_options
@click.argument("queues_", metavar="QUEUE...", nargs=-1, required=True,
                shell_complete=complete_queue)
def resume(url: str | None, app_spec: str | None, queues_: tuple[str, ...]) -> None:
    """Let workers take jobs of the queues again."""

    async def work(admin: Admin) -> None:
        for queue in queues_:
            await admin.resume(queue)

    run(url, app_spec, work)
    click.echo("resumed: " + ", ".join(queues_))


@click.command()
@store_options
@json_option
def paused(url: str | None, app_spec: str | None, as_json: bool) -> None:
    """The paused queues."""
    found = sorted(run(url, app_spec, lambda admin: admin.paused()))
    if as_json:
        emit_json(found)
    else:
        for queue in found:
            click.echo(queue)


@click.group()
def dlq() -> None:
    """The dead-letter queue: the dead jobs."""


@dlq.command("replay")
@store_options
@click.option("--queue", default=None, shell_complete=complete_queue, help="Only this queue.")
@click.option("--name", default=None, help="Only this handler.")
@click.option("--batch", type=int, default=None, help="At most this many jobs.")
@apply_option
@json_option
def dlq_replay(url: str | None, app_spec: str | None, queue: str | None, name: str | None,
               batch: int | None, apply: bool, as_json: bool) -> None:
    """Run dead jobs again (as `retry --state dead`)."""
    work = _bulk([State.DEAD], queue, name, batch, apply,
                 lambda admin: admin.retry_all("dead", queue=queue, name=name, limit=batch))
    _print_bulk(run(url, app_spec, work), "replay", "replayed", as_json)


#: The commands this module adds to the ``workhorse`` group.
COMMANDS: list[click.Command] = [retry, requeue, delete, purge, pause, resume, paused, dlq]
