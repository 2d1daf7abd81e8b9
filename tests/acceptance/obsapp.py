"""An app for the observability acceptance tests: one handler that works, one that fails
on its first attempt."""

import workhorse as wh

app = wh.App()  # $WORKHORSE_URL


@app.handler("greet")
async def greet(job: wh.Job) -> str:
    return f"hello {job.args['name']}"


@app.handler("flaky", retries=1, backoff=wh.constant(0.01))
async def flaky(job: wh.Job) -> str:
    if job.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "ok"
