"""The admin API, ``app.admin``: see and steer the jobs of a store.

Queues with their counts and latency, workers from their heartbeats, busy jobs, paged lists,
one job with its attempts; retry, requeue, delete, purge, pause and resume; snapshots that
move every job to another store. Every type here is a frozen dataclass of JSON-friendly
values (times are epoch seconds), for the CLI, the dashboard and programs alike.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from workhorse import codec
from workhorse.backends.base import AttemptRecord, Backend, JobRecord, State, WorkerInfo
from workhorse.errors import SerializationError

if TYPE_CHECKING:
    from workhorse.app import App


@dataclasses.dataclass(frozen=True)
class QueueInfo:
    """One queue: its jobs counted by state, whether it is paused, and its latency."""

    name: str
    #: Keys are State values: "ready", "scheduled", "running", "retrying", ...
    counts: dict[str, int]
    paused: bool
    #: Seconds the oldest READY job has waited (0 if none).
    latency: float


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One finished attempt of a job."""

    attempt: int
    status: int | None
    error: str | None
    traceback: str | None
    started_at: float | None
    finished_at: float | None


@dataclasses.dataclass(frozen=True)
class JobView:
    """One job as admin shows it, JSON-friendly."""

    id: str
    name: str
    queue: str
    state: str
    status: int | None
    args: Any
    args_error: str | None
    headers: dict[str, str]
    priority: int
    attempt: int
    enqueued_at: float
    run_at: float
    started_at: float | None
    finished_at: float | None
    lease_owner: str | None
    lease_expires_at: float | None
    checkin: str | None
    checkin_at: float | None
    result: Any
    error: str | None
    traceback: str | None
    attempts: list[Attempt]
    unique_key: str | None
    idempotency_key: str | None


@dataclasses.dataclass(frozen=True)
class Page:
    """A page of a job list."""

    items: list[JobView]
    total: int
    offset: int
    limit: int


@dataclasses.dataclass(frozen=True)
class Stats:
    """Totals over the whole store."""

    counts: dict[str, int]
    queues: int
    workers: int
    busy: int
    paused: list[str]


#: The states ``retry`` moves back to READY: failed for good, waiting to retry, cancelled.
RETRYABLE = frozenset({State.DEAD, State.RETRYING, State.CANCELLED})
#: The states ``requeue`` makes due now.
REQUEUEABLE = frozenset({State.SCHEDULED, State.RETRYING})
#: The states ``delete`` may delete: every one but RUNNING, which only its worker ends.
DELETABLE = frozenset(State) - {State.RUNNING}
#: How many jobs ``export`` reads and ``import_`` writes at a time.
BATCH = 500
#: The fields of a JobRecord that a snapshot row carries as they are.
_PLAIN_FIELDS = ("id", "name", "queue", "priority", "timeout", "attempt", "run_at",
                 "enqueued_at", "started_at", "finished_at", "lease_owner", "lease_expires_at",
                 "status", "error", "traceback", "checkin", "checkin_at", "unique_key",
                 "idempotency_key", "cancel_requested")


class Admin:
    """See and steer the jobs of an app's store: ``app.admin``.

    Reads are consistent per call; each move is atomic per job (see the backend verbs).
    Destructive calls act at once: the CLI is where dry runs live.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def _backend(self) -> Backend:
        return await self.app.backend()

    # -- reading ------------------------------------------------------------------------------

    async def queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or is paused, by name, with counts and latency."""
        stats = await (await self._backend()).queue_stats()
        return [QueueInfo(name=q.name, counts={s.value: int(q.counts.get(s, 0)) for s in State},
                          paused=q.paused, latency=q.latency) for q in stats]

    async def workers(self) -> list[WorkerInfo]:
        """The worker processes known from their heartbeats."""
        return await (await self._backend()).workers()

    async def busy(self) -> list[JobView]:
        """The RUNNING jobs, oldest first, with their check-ins."""
        backend = await self._backend()
        records = await backend.list_jobs(state=State.RUNNING, limit=10_000)
        return await self._views(backend, records)

    async def jobs(self, state: State | str | None = None, *, queue: str | None = None,
                   name: str | None = None, limit: int = 50, offset: int = 0) -> Page:
        """A page of the jobs matching the filters, oldest first, and how many match."""
        wanted = None if state is None else as_state(state)
        backend = await self._backend()
        records = await backend.list_jobs(state=wanted, queue=queue, name=name,
                                          limit=max(0, limit), offset=max(0, offset))
        total = await backend.count_jobs(state=wanted, queue=queue, name=name)
        return Page(items=await self._views(backend, records), total=total,
                    offset=max(0, offset), limit=max(0, limit))

    async def job(self, job_id: str) -> JobView | None:
        """One job with its args, attempts, result and timings; None if there is none."""
        backend = await self._backend()
        record = await backend.get(job_id)
        if record is None:
            return None
        [view] = await self._views(backend, [record])
        return view

    async def _views(self, backend: Backend, records: list[JobRecord]) -> list[JobView]:
        histories = await backend.attempt_history([r.id for r in records]) if records else {}
        return [job_view(r, histories.get(r.id, [])) for r in records]

    async def stats(self) -> Stats:
        """Totals by state over every queue, and the queues, workers and busy jobs."""
        backend = await self._backend()
        stats = await backend.queue_stats()
        workers = await backend.workers()
        counts = {s.value: sum(int(q.counts.get(s, 0)) for q in stats) for s in State}
        return Stats(counts=counts, queues=len(stats), workers=len(workers),
                     busy=counts[State.RUNNING.value],
                     paused=sorted(q.name for q in stats if q.paused))

    # -- moves --------------------------------------------------------------------------------

    async def retry(self, job_id: str) -> bool:
        """Run a DEAD, RETRYING or CANCELLED job again now, its attempts kept; False if
        there is no such job, it is in another state, or a live job holds its unique key."""
        backend = await self._backend()
        return await backend.make_ready(states=RETRYABLE, job_id=job_id) == 1

    async def retry_all(self, state: State | str = "dead", *, queue: str | None = None,
                        name: str | None = None, limit: int | None = None) -> int:
        """``retry`` every job in ``state`` (DEAD, RETRYING or CANCELLED) matching the
        filters, up to ``limit``; returns how many."""
        wanted = as_state(state)
        if wanted not in RETRYABLE:
            raise ValueError(f"only {_names(RETRYABLE)} jobs can be retried, not {wanted}")
        backend = await self._backend()
        return await backend.make_ready(states={wanted}, queue=queue, name=name, limit=limit)

    async def requeue(self, job_id: str) -> bool:
        """Make a SCHEDULED or RETRYING job due now; False if it is in another state."""
        backend = await self._backend()
        return await backend.make_ready(states=REQUEUEABLE, job_id=job_id) == 1

    async def requeue_all(self, state: State | str | None = None, *, queue: str | None = None,
                          name: str | None = None, limit: int | None = None) -> int:
        """``requeue`` the SCHEDULED and RETRYING jobs (or those in ``state``) matching the
        filters, up to ``limit``; returns how many."""
        states = REQUEUEABLE if state is None else {as_state(state)}
        if not states <= REQUEUEABLE:
            raise ValueError(f"only {_names(REQUEUEABLE)} jobs can be requeued")
        backend = await self._backend()
        return await backend.make_ready(states=states, queue=queue, name=name, limit=limit)

    async def delete(self, job_id: str) -> bool:
        """Delete a job in any state but RUNNING; False if there is none or it runs."""
        backend = await self._backend()
        return await backend.delete_jobs(states=DELETABLE, job_id=job_id) == 1

    async def delete_all(self, state: State | str, *, queue: str | None = None,
                         name: str | None = None, limit: int | None = None) -> int:
        """Delete the jobs in ``state`` (not RUNNING) matching the filters; how many."""
        wanted = as_state(state)
        if wanted is State.RUNNING:
            raise ValueError("running jobs cannot be deleted: cancel them instead")
        backend = await self._backend()
        return await backend.delete_jobs(states={wanted}, queue=queue, name=name, limit=limit)

    async def purge(self, queue: str) -> int:
        """Delete every READY job of ``queue``; returns how many."""
        backend = await self._backend()
        return await backend.delete_jobs(states={State.READY}, queue=queue)

    async def pause(self, queue: str) -> None:
        """Stop workers from taking jobs of ``queue`` (running ones finish)."""
        await (await self._backend()).pause(queue)

    async def resume(self, queue: str) -> None:
        """Let workers take jobs of ``queue`` again."""
        await (await self._backend()).resume(queue)

    async def paused(self) -> set[str]:
        """The paused queues."""
        return await (await self._backend()).paused()

    # -- snapshots ----------------------------------------------------------------------------

    async def export(self, *, payload: bool = True) -> AsyncGenerator[dict[str, Any], None]:
        """Every job as a JSON-ready row (``"kind": "job"``), in enqueue order, then one
        row per paused queue (``"kind": "paused"``); ``import_`` recreates them in any store.

        Without ``payload`` the rows leave out args and results (for ``dump``; such rows
        cannot be imported). Jobs that move while the export runs are read as they are
        when reached: pause the queues or stop the workers for an exact copy.
        """
        backend = await self._backend()
        after: int | None = 0
        while after is not None:
            page = await backend.scan(after=after, limit=BATCH)
            for record in page.records:
                yield export_row(record, page.histories.get(record.id, []), payload=payload)
            after = page.after
        for queue in sorted(await backend.paused()):
            yield {"kind": "paused", "queue": queue}

    async def import_(self, rows: AsyncIterable[dict[str, Any]] | Iterable[dict[str, Any]]
                      ) -> int:
        """Write the rows of ``export`` into this store; returns how many jobs were written.

        Jobs keep their ids, states, attempts, times, keys, results and histories. A job
        whose id (or idempotency key, or, when live, unique key) is taken here is skipped,
        so importing the same snapshot twice writes nothing the second time. A RUNNING job
        comes in READY with its running attempt given back: its lease stays behind. A
        malformed row raises ValueError naming it, after the rows before it are written.
        """
        backend = await self._backend()
        written = 0
        batch: list[tuple[JobRecord, list[AttemptRecord]]] = []

        async def flush() -> int:
            if not batch:
                return 0
            done = await backend.restore([r for r, _ in batch],
                                         {r.id: h for r, h in batch if h})
            batch.clear()
            return sum(done)

        number = 0
        async for row in _aiter(rows):
            number += 1
            kind = row.get("kind", "job") if isinstance(row, dict) else None
            if kind == "paused":
                written += await flush()
                await backend.pause(str(row["queue"]))
                continue
            try:
                if kind != "job":
                    raise ValueError(f"row {number}: not a snapshot row: {str(row)[:200]}")
                batch.append(import_record(row, number))
            except ValueError:
                await flush()  # the rows before it are written, as documented
                raise
            if len(batch) >= BATCH:
                written += await flush()
        return written + await flush()


def as_state(state: State | str) -> State:
    """``state`` as a State; ValueError listing the states if it names none."""
    try:
        return State(state)
    except ValueError:
        raise ValueError(f"unknown state {state!r}: one of {_names(State)}") from None


def _names(states: Iterable[State]) -> str:
    return ", ".join(s.value for s in State if s in set(states))


async def _aiter(rows: AsyncIterable[dict[str, Any]] | Iterable[dict[str, Any]]
                 ) -> AsyncIterator[dict[str, Any]]:
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            yield row
    else:
        for row in rows:
            yield row


def job_view(record: JobRecord, history: list[AttemptRecord]) -> JobView:
    """How admin shows ``record``: decoded args and result, and its attempts."""
    args: Any = None
    args_error: str | None = None
    try:
        args = codec.decode_args(record.payload)
    except (SerializationError, msgspec.DecodeError) as exc:
        args_error = f"the stored args cannot be decoded: {exc}"
    result: Any = None
    if record.result is not None:
        try:
            result = codec.decode(record.result)
        except msgspec.DecodeError:
            result = None
    attempts = [Attempt(attempt=a.attempt, status=a.status, error=a.error,
                        traceback=a.traceback, started_at=a.started_at,
                        finished_at=a.finished_at) for a in history]
    recorded = {a.attempt for a in history}
    if record.attempt > 0 and record.attempt not in recorded and record.started_at is not None \
            and record.state in (State.RUNNING, State.SUCCEEDED, State.CANCELLED):
        # The latest run, which no failure recorded: running now, or ended well or cancelled.
        running = record.state is State.RUNNING
        attempts.append(Attempt(
            attempt=record.attempt, status=None if running else record.status,
            error=None if running else record.error,
            traceback=None if running else record.traceback,
            started_at=record.started_at, finished_at=None if running else record.finished_at))
    return JobView(
        id=record.id, name=record.name, queue=record.queue, state=record.state.value,
        status=record.status, args=args, args_error=args_error, headers=dict(record.headers),
        priority=record.priority, attempt=record.attempt, enqueued_at=record.enqueued_at,
        run_at=record.run_at, started_at=record.started_at, finished_at=record.finished_at,
        lease_owner=record.lease_owner, lease_expires_at=record.lease_expires_at,
        checkin=record.checkin, checkin_at=record.checkin_at, result=result,
        error=record.error, traceback=record.traceback, attempts=attempts,
        unique_key=record.unique_key, idempotency_key=record.idempotency_key,
    )


def export_row(record: JobRecord, history: list[AttemptRecord], *,
               payload: bool = True) -> dict[str, Any]:
    """The snapshot row of one job: JSON-ready, with everything needed to recreate it.

    The payload and result are their stored JSON text (``payload_base64`` and
    ``result_base64`` if a store holds bytes that are not UTF-8).
    """
    row: dict[str, Any] = {"kind": "job", "state": record.state.value}
    for field in _PLAIN_FIELDS:
        row[field] = getattr(record, field)
    row["headers"] = dict(record.headers)
    row["attempts"] = [dataclasses.asdict(a) for a in history]
    if payload:
        row.update(_blob("payload", record.payload))
        if record.result is not None:
            row.update(_blob("result", record.result))
    return row


def _blob(key: str, data: bytes) -> dict[str, str]:
    try:
        return {key: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{key}_base64": base64.b64encode(data).decode("ascii")}


def import_record(row: dict[str, Any], number: int = 0) -> tuple[JobRecord, list[AttemptRecord]]:
    """The JobRecord and history of an ``export`` row; ValueError naming what is wrong.

    A RUNNING row becomes READY with its running attempt given back (as ``release``).
    """
    where = f"row {number}" if number else "row"
    try:
        if "payload" in row:
            payload = str(row["payload"]).encode("utf-8")
        elif "payload_base64" in row:
            payload = base64.b64decode(row["payload_base64"])
        else:
            raise ValueError("it has no payload (was it exported with --no-payload?)")
        result: bytes | None = None
        if row.get("result") is not None:
            result = str(row["result"]).encode("utf-8")
        elif row.get("result_base64") is not None:
            result = base64.b64decode(row["result_base64"])
        state = as_state(row["state"])
        headers = row.get("headers") or {}
        if not isinstance(headers, dict):
            raise ValueError("headers must be an object")
        record = JobRecord(
            id=_text(row["id"]), name=_text(row["name"]), queue=_text(row["queue"]),
            payload=payload, headers={str(k): str(v) for k, v in headers.items()},
            priority=int(row.get("priority") or 0), timeout=_time(row.get("timeout")),
            state=state, attempt=int(row.get("attempt") or 0),
            run_at=float(row["run_at"]), enqueued_at=float(row["enqueued_at"]),
            started_at=_time(row.get("started_at")), finished_at=_time(row.get("finished_at")),
            status=None if row.get("status") is None else int(row["status"]),
            result=result, error=_opt_text(row.get("error")),
            traceback=_opt_text(row.get("traceback")), checkin=_opt_text(row.get("checkin")),
            checkin_at=_time(row.get("checkin_at")),
            unique_key=_opt_text(row.get("unique_key")),
            idempotency_key=_opt_text(row.get("idempotency_key")),
            cancel_requested=bool(row.get("cancel_requested")),
        )
        history = [AttemptRecord(
            attempt=int(a.get("attempt") or 0),
            status=None if a.get("status") is None else int(a["status"]),
            error=_opt_text(a.get("error")), traceback=_opt_text(a.get("traceback")),
            started_at=_time(a.get("started_at")), finished_at=_time(a.get("finished_at")),
        ) for a in row.get("attempts") or []]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        missing = f"the field {exc} is missing" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{where} cannot be imported: {missing}") from None
    if record.state is State.RUNNING:
        record.state = State.READY
        record.attempt = max(0, record.attempt - 1)
        record.cancel_requested = False
    return record, history


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, not {value!r}")
    return value


def _opt_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _time(value: Any) -> float | None:
    return None if value is None else float(value)
