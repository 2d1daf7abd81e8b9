"""Between Python values and what the scripts take and return.

A job is a hash whose fields are named after JobRecord's; a field that is None is absent.
Times are stored as text that reads back as the exact float that was meant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from workhorse import codec
from workhorse.backends.base import (
    JobRecord,
    Limits,
    NewJob,
    QueueStats,
    Settlement,
    State,
    WorkerInfo,
)

#: The READY, SCHEDULED, RUNNING, RETRYING, SUCCEEDED, DEAD, CANCELLED counts of stats.lua.
_STATS_ORDER = (State.READY, State.SCHEDULED, State.RUNNING, State.RETRYING, State.SUCCEEDED,
                State.DEAD, State.CANCELLED)
#: The states a run can be settled as.
_SETTLED = frozenset({State.SUCCEEDED, State.CANCELLED, State.RETRYING, State.DEAD,
                      State.READY})


def opt(value: str | None) -> str:
    """An optional script argument: "" for None, else "=" and the value."""
    return "" if value is None else "=" + value


def number(value: float) -> str:
    """A float as text that reads back exactly; ValueError if it is not finite."""
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, not {value!r}")
    return repr(float(value))


def job_args(job: NewJob) -> list[str | bytes]:
    """The 10 enqueue.lua arguments of one job."""
    return [
        job.id, job.name, job.queue, job.payload, codec.encode(job.headers, what="headers"),
        str(int(job.priority)),
        opt(None if job.timeout is None else number(job.timeout)),
        opt(None if job.run_at is None else number(job.run_at)),
        opt(job.unique_key), opt(job.idempotency_key),
    ]


def settlement_args(s: Settlement) -> list[str | bytes]:
    """The 9 settle.lua arguments of one settlement; ValueError for a move it cannot make."""
    if s.state not in _SETTLED:
        raise ValueError(f"a run cannot be settled as {s.state}")
    if s.state is State.RETRYING and s.run_at is None:
        raise ValueError("a retry needs run_at")
    return [
        s.job_id, s.token, s.state.value, str(int(s.status)),
        "" if s.result is None else b"=" + s.result,
        "" if s.run_at is None else number(s.run_at),
        opt(s.error), opt(s.traceback), "1" if s.keep else "0",
    ]


def limits_arg(limits: Mapping[str, Limits] | None) -> bytes:
    """The limits of claim.lua: name -> [max concurrency, rate, burst], -1 for none."""
    return codec.encode({
        name: [-1 if lim.max_concurrency is None else lim.max_concurrency,
               -1 if lim.rate is None else lim.rate, lim.burst]
        for name, lim in (limits or {}).items()
    })


def text(value: bytes) -> str:
    """Text written by us: always UTF-8, but a hand-edited store may hold anything."""
    return value.decode("utf-8", "replace")


def fields(flat: Sequence[bytes]) -> dict[str, bytes]:
    """HGETALL as a script returns it (a flat list) as a dict."""
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def job_record(hash_: Mapping[str, bytes]) -> JobRecord | None:
    """The JobRecord of a job hash, or None if it is not one (no state)."""
    # Written out field by field, without helper closures: this runs for every job claimed.
    get = hash_.get
    state = get("state")
    if state is None:
        return None
    headers = get("headers")
    priority, attempt, status = get("priority"), get("attempt"), get("status")
    return JobRecord(
        id=_text(get("id")) or "", name=_text(get("name")) or "",
        queue=_text(get("queue")) or "", payload=get("payload", b""),
        headers=codec.decode_headers(headers),
        priority=int(float(priority)) if priority is not None else 0,
        timeout=_real(get("timeout")), state=State(text(state)),
        attempt=int(float(attempt)) if attempt is not None else 0,
        run_at=_real(get("run_at")) or 0.0, enqueued_at=_real(get("enqueued_at")) or 0.0,
        started_at=_real(get("started_at")), finished_at=_real(get("finished_at")),
        lease_owner=_text(get("lease_owner")), lease_expires_at=_real(get("lease_expires_at")),
        token=_text(get("token")), status=int(float(status)) if status is not None else None,
        result=get("result"), error=_text(get("error")), traceback=_text(get("traceback")),
        checkin=_text(get("checkin")), checkin_at=_real(get("checkin_at")),
        unique_key=_text(get("unique_key")), idempotency_key=_text(get("idempotency_key")),
        cancel_requested="cancel_requested" in hash_,
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _real(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def claimed_records(rows: Sequence[Sequence[bytes | None]]) -> list[JobRecord]:
    """The RUNNING JobRecords of claim.lua's reply: CLAIMED_FIELDS of each job, in order."""
    claimed: list[JobRecord] = []
    for (id_, name, queue, payload, headers, priority, timeout, attempt, run_at, enqueued_at,
         started_at, lease_owner, lease_expires_at, token, status, error, traceback,
         unique_key, idempotency_key) in rows:
        claimed.append(JobRecord(
            id=_text(id_) or "", name=_text(name) or "", queue=_text(queue) or "",
            payload=payload or b"", headers=codec.decode_headers(headers),
            priority=int(float(priority)) if priority is not None else 0,
            timeout=_real(timeout), state=State.RUNNING,
            attempt=int(float(attempt)) if attempt is not None else 0,
            run_at=_real(run_at) or 0.0, enqueued_at=_real(enqueued_at) or 0.0,
            started_at=_real(started_at), lease_owner=_text(lease_owner),
            lease_expires_at=_real(lease_expires_at), token=_text(token),
            status=int(float(status)) if status is not None else None,
            error=_text(error), traceback=_text(traceback), unique_key=_text(unique_key),
            idempotency_key=_text(idempotency_key)))
    return claimed


#: The fields of a claimed job (claim.lua's CLAIMED_FIELDS; common.lua's CLAIMED_COUNT).
CLAIMED_COUNT = 19


def handed_records(flat: Sequence[bytes]) -> list[JobRecord]:
    """The RUNNING JobRecords that enqueue.lua handed to a waiting worker: CLAIMED_COUNT
    fields a job, each "" for none or "=" and the value."""
    fields = [value[1:] if value else None for value in flat]
    return claimed_records([fields[i:i + CLAIMED_COUNT]
                            for i in range(0, len(fields) - CLAIMED_COUNT + 1, CLAIMED_COUNT)])


def job_records(rows: Sequence[Sequence[bytes]]) -> list[JobRecord]:
    """The JobRecords of a script's list of HGETALL replies."""
    records = (job_record(fields(row)) for row in rows)
    return [record for record in records if record is not None]


def worker_info(worker: WorkerInfo) -> bytes:
    """What heartbeat.lua stores of a worker (its last beat is kept apart)."""
    return codec.encode({"host": worker.host, "pid": worker.pid,
                         "concurrency": worker.concurrency, "queues": list(worker.queues),
                         "started_at": worker.started_at})


def worker_infos(rows: Sequence[Sequence[bytes]]) -> list[WorkerInfo]:
    """The WorkerInfos of workers.lua's reply."""
    workers: list[WorkerInfo] = []
    for worker_id, info, beat in rows:
        data: dict[str, Any] = codec.decode(info)
        workers.append(WorkerInfo(
            id=text(worker_id), host=data["host"], pid=data["pid"],
            concurrency=data["concurrency"], queues=list(data["queues"]),
            started_at=data["started_at"], last_beat=float(beat)))
    return workers


def queue_stats(reply: Sequence[Any]) -> list[QueueStats]:
    """The QueueStats of stats.lua's reply, sorted by queue name."""
    now_text, rows = reply
    now = float(now_text)
    stats: list[QueueStats] = []
    for row in rows:
        queue, paused, *counts, oldest = row
        stats.append(QueueStats(
            name=text(queue), counts=dict(zip(_STATS_ORDER, map(int, counts), strict=True)),
            paused=bool(paused), latency=max(0.0, now - float(oldest)) if oldest else 0.0))
    return sorted(stats, key=lambda s: s.name)
