"""Between Python values and what the admin scripts (count, make_ready, delete, history,
scan, restore) take and return."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from workhorse import codec
from workhorse.backends.base import (
    HISTORY_LIMIT,
    AttemptRecord,
    JobRecord,
    ScanPage,
    State,
)
from workhorse.backends.common import history_from_json, history_to_json
from workhorse.backends.redis.records import fields, job_record, number, text


def states_arg(states: Collection[State]) -> str:
    """The states of make_ready.lua and delete.lua, comma-separated; RUNNING is refused."""
    if State.RUNNING in states:
        raise ValueError("a RUNNING job leaves RUNNING only through its worker or reap")
    return ",".join(sorted(s.value for s in states))


def restore_args(record: JobRecord, history: Sequence[AttemptRecord] | None) -> list[Any]:
    """The 3 restore.lua arguments of one job: its fields as JSON text, payload, result."""
    if record.state is State.RUNNING:
        raise ValueError("a RUNNING job cannot be restored: its lease is not portable")
    given: dict[str, str | None] = {
        "id": record.id, "name": record.name, "queue": record.queue,
        "headers": codec.encode(record.headers, what="headers").decode(),
        "priority": str(int(record.priority)), "state": record.state.value,
        "attempt": str(int(record.attempt)), "run_at": number(record.run_at),
        "enqueued_at": number(record.enqueued_at),
        "timeout": _opt_number(record.timeout), "started_at": _opt_number(record.started_at),
        "finished_at": _opt_number(record.finished_at),
        "status": None if record.status is None else str(int(record.status)),
        "error": record.error, "traceback": record.traceback, "checkin": record.checkin,
        "checkin_at": _opt_number(record.checkin_at), "unique_key": record.unique_key,
        "idempotency_key": record.idempotency_key,
        "cancel_requested": "1" if record.cancel_requested else None,
        "attempts": history_to_json(list(history)[-HISTORY_LIMIT:]).decode()
        if history else None,
    }
    meta = codec.encode({k: v for k, v in given.items() if v is not None}, what="job")
    return [meta, record.payload, b"" if record.result is None else b"=" + record.result]


def _opt_number(value: float | None) -> str | None:
    return None if value is None else number(value)


def histories(job_ids: Sequence[str], reply: Sequence[bytes]) -> dict[str, list[AttemptRecord]]:
    """The histories of history.lua's reply, by job id (jobs without any omitted)."""
    return {job_id: found for job_id, raw in zip(job_ids, reply, strict=True)
            if (found := history_from_json(raw))}


def scan_page(reply: Sequence[Any]) -> ScanPage:
    """The ScanPage of scan.lua's reply."""
    next_seq, rows = reply
    records: list[JobRecord] = []
    found: dict[str, list[AttemptRecord]] = {}
    for row in rows:
        hash_: Mapping[str, bytes] = fields(row)
        record = job_record(hash_)
        if record is None:
            continue
        records.append(record)
        history = history_from_json(hash_.get("attempts"))
        if history:
            found[record.id] = history
    return ScanPage(records, found, int(text(next_seq)) if next_seq else None)
