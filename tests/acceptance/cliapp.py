"""An app for the CLI acceptance tests."""

import workhorse as wh

app = wh.App()  # $WORKHORSE_URL


@app.handler("greet", queue="mail")
async def greet(job: wh.Job) -> str:
    return f"hello {job.args['name']}"
