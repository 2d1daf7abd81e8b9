"""The app the dashboard tests watch: handlers that leave jobs in every state.

Loaded by the test process and, as ``tests.web.webapp:app``, by ``workhorse worker`` and
``workhorse ui`` subprocesses; the store comes from $WORKHORSE_URL.
"""

import asyncio

import workhorse as wh


def make_app(url: str | None = None) -> wh.App:
    """The app on the store at ``url`` (default: $WORKHORSE_URL)."""
    app = wh.App(url)
    for name, handler, options in HANDLERS:
        app.register(name, handler, **options)
    return app


async def greet(job: wh.Job) -> dict:
    return {"hello": job.args.get("name", "world")}


async def fail_once(job: wh.Job) -> dict:
    """Dead after its first run (a 4xx is never retried); succeeds when a user retries it."""
    if job.attempt <= 1:
        raise wh.JobError(400, "the first attempt always fails")
    return {"ok": True, "attempt": job.attempt}


async def broken(job: wh.Job) -> None:
    raise wh.JobError(400, f"no such address: {job.args.get('address')}")


async def flaky(job: wh.Job) -> None:
    raise RuntimeError("the service is down")


async def slow(job: wh.Job) -> dict:
    steps = int(job.args.get("steps", 3))
    for step in range(1, steps + 1):
        await job.checkin(f"step {step}/{steps}")
        await asyncio.sleep(float(job.args.get("pause", 0.2)))
    return {"steps": steps}


async def send_email(job: wh.Job) -> dict:
    return {"sent": job.args.get("to")}


HANDLERS = [
    ("greet", greet, {}),
    ("fail_once", fail_once, {"retries": 0}),
    ("broken", broken, {"retries": 0}),
    ("flaky", flaky, {"retries": 5, "backoff": wh.constant(3600)}),
    ("slow", slow, {}),
    ("send_email", send_email, {"queue": "mail"}),
]

app = make_app()
