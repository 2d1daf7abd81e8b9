"""The app that worker processes of the result stream tests run: handlers with results."""

import workhorse as wh

app = wh.App()  # $WORKHORSE_URL


@app.handler("square")
async def square(job: wh.Job) -> dict:
    return {"square": job.args["n"] ** 2}


@app.handler("refuse")
async def refuse(job: wh.Job) -> None:
    raise wh.JobError(403, f"refused {job.args['n']}")
