"""Jobs in every state, each put there by the store's own verbs (enqueue, claim, retry, bury,
ack, cancel) the way a worker would have: for the admin tests and the admin CLI's."""

from __future__ import annotations

import dataclasses
from typing import Any

from workhorse.backends.base import Backend, EnqueueOutcome, NewJob, State

from .conftest import new_job

#: Far enough ahead that nothing scheduled falls due during a test.
LATER = 3600.0


@dataclasses.dataclass
class Seeded:
    """The ids of the seeded jobs, one per state."""

    ready: str
    scheduled: str
    running: str
    retrying: str
    dead: str
    succeeded: str
    cancelled: str
    #: The token of the running job's attempt.
    token: str

    def by_state(self) -> dict[State, str]:
        return {State(field.name): getattr(self, field.name)
                for field in dataclasses.fields(self) if field.name != "token"}


async def write(store: Backend, job: NewJob) -> str:
    [done] = await store.enqueue([job])
    assert done.outcome is EnqueueOutcome.CREATED
    return job.id


async def start(store: Backend, job: NewJob, worker_id: str = "worker-1") -> str:
    """Enqueue ``job`` and claim it; its token. Its queue must hold nothing else ready."""
    await write(store, job)
    [claimed] = await store.claim(worker_id, [job.queue], 1, 30.0)
    assert claimed.id == job.id and claimed.token is not None
    return claimed.token


async def seed(store: Backend) -> Seeded:
    """One job in each state: queue "q" holds the queued ones, "work" those that ran."""
    now = await store.now()
    ready = await write(store, new_job("mail", {"to": "a@b.c"}, queue="q",
                                       headers={"trace": "t1"}, priority=3))
    scheduled = await write(store, new_job("mail", {"to": "later"}, queue="q",
                                           run_at=now + LATER, unique_key="mail:later"))
    cancelled = await write(store, new_job("report", {"n": 1}, queue="q"))
    assert await store.cancel(cancelled) is State.CANCELLED

    running = new_job("crunch", {"n": 1}, queue="work", timeout=60.0)
    token = await start(store, running)
    assert await store.checkin(running.id, token, "halfway")

    retrying = new_job("crunch", {"n": 2}, queue="work")
    assert await store.retry(retrying.id, await start(store, retrying), run_at=now + LATER,
                             status=500, error="boom", traceback="Traceback: boom")
    dead = new_job("crunch", {"n": 3}, queue="work", idempotency_key="idem-dead")
    assert await store.bury(dead.id, await start(store, dead), status=400, error="bad input",
                            traceback="Traceback: bad")
    succeeded = new_job("crunch", {"n": 4}, queue="work")
    assert await store.ack(succeeded.id, await start(store, succeeded),
                           state=State.SUCCEEDED, status=200, result=b'{"sum": 10}')
    return Seeded(ready=ready, scheduled=scheduled, running=running.id,
                  retrying=retrying.id, dead=dead.id, succeeded=succeeded.id,
                  cancelled=cancelled, token=token)


def as_moved(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the rows of a snapshot look like once imported: a RUNNING job is READY, its
    running attempt given back and its lease left behind."""
    moved = []
    for row in rows:
        row = dict(row)
        if row.get("state") == "running":
            row.update(state="ready", attempt=row["attempt"] - 1, lease_owner=None,
                       lease_expires_at=None, cancel_requested=False)
        moved.append(row)
    return moved
