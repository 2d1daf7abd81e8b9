"""Fill a store with jobs in every state, through the public API and a real worker."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from typing import Any

import workhorse as wh
from workhorse.backends.base import WorkerInfo


async def populate(app: wh.App, *, running_worker: str = "web-test:1:held") -> dict[str, str]:
    """Jobs in every state; returns one job id per state (and the held worker's id)."""
    ids: dict[str, str] = {}
    ids["succeeded"] = (await app.enqueue("greet", {"name": "Ada"})).id
    ids["dead"] = (await app.enqueue("broken", {"address": "<b>nobody</b>@example"})).id
    ids["retrying"] = (await app.enqueue("flaky", {"n": 1})).id
    ids["fail_once"] = (await app.enqueue("fail_once", {"n": 1})).id
    worker = wh.Worker(app, concurrency=4, queues=["default", "mail"], poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = {(await app.admin.job(i)).state for i in ids.values()}
            if states == {"succeeded", "dead", "retrying"}:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
        await task
    ids["scheduled"] = (await app.enqueue("greet", {"name": "later"}, delay=3600)).id
    ids["cancelled"] = (await app.enqueue("greet", {"name": "never"}, delay=3600)).id
    await app.cancel(ids["cancelled"])
    # Held by a "worker" that beats but never finishes, so the job stays RUNNING.
    ids["running"] = (await app.enqueue("slow", {"steps": 1000}, queue="slow")).id
    backend = await app.backend()
    info = WorkerInfo(id=running_worker, host="web-test", pid=1, concurrency=2,
                      queues=["slow"], started_at=time.time())
    [record] = await backend.claim(running_worker, ["slow"], 1, 3600.0)
    await backend.heartbeat(info, [record.id], 3600.0)
    await backend.checkin(record.id, record.token or "", "step 7/1000")
    ids["worker"] = running_worker
    ids["ready"] = (await app.enqueue("send_email", {"to": "a@example.com"})).id
    return ids


async def seed_history(app: wh.App, *, now: float | None = None) -> int:
    """An hour of finished jobs, imported through ``app.admin``, for the charts to show:
    a few a minute succeeding in waves, and a burst of failures half an hour ago."""
    now = time.time() if now is None else now
    rng = random.Random(8)
    rows = []
    for minute in range(60, 0, -1):
        wave = 6 + 4 * math.sin(minute / 7)
        failures = 4 if 28 <= minute <= 31 else int(rng.random() < 0.15)
        for n in range(int(wave + rng.random() * 3) + failures):
            finished = now - minute * 60 + rng.random() * 60
            started = finished - rng.uniform(0.05, 2.0)
            dead = n < failures
            rows.append(_row(
                started - rng.uniform(0.1, 5.0), started, finished,
                name="send_email" if dead else rng.choice(["greet", "send_email"]),
                state="dead" if dead else "succeeded",
                error="SMTP server unavailable" if dead else None, rng=rng))
    return await app.admin.import_(rows)


def _row(enqueued: float, started: float, finished: float, *, name: str, state: str,
         error: str | None, rng: random.Random) -> dict[str, Any]:
    job_id = f"{int(enqueued * 1000):012x}{rng.getrandbits(80):020x}"
    status = 503 if error else 200
    return {
        "kind": "job", "id": job_id, "name": name, "queue": "mail" if name == "send_email"
        else "default", "state": state, "priority": 0, "timeout": None,
        "attempt": 6 if error else 1, "run_at": enqueued, "enqueued_at": enqueued,
        "started_at": started, "finished_at": finished, "lease_owner": None,
        "lease_expires_at": None, "status": status, "error": error, "traceback": None,
        "checkin": None, "checkin_at": None, "unique_key": None, "idempotency_key": None,
        "cancel_requested": False, "headers": {},
        "attempts": [{"attempt": 6, "status": 503, "error": error, "traceback": None,
                      "started_at": started, "finished_at": finished}] if error else [],
        "payload": json.dumps({"to": "someone@example.com"} if name == "send_email"
                              else {"name": "Ada"}),
        **({} if error else {"result": json.dumps({"ok": True})}),
    }
