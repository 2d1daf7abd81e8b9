"""An app for the metrics tests: jobs that succeed, fail for good, fail once then succeed,
end cancelled, and one that enqueues others (so a worker process counts enqueues too)."""

import workhorse as wh


def register_handlers(app: wh.App) -> None:
    """greet succeeds, reject fails for good (400), flaky fails once (503) then succeeds,
    give_up ends cancelled (499), fan_out enqueues a greet per name."""

    @app.handler("greet")
    async def greet(job: wh.Job) -> str:
        return f"hello {job.args['name']}"

    @app.handler("reject")
    async def reject(job: wh.Job) -> None:
        raise wh.JobError(400, "bad input")

    @app.handler("flaky", retries=1, backoff=wh.constant(0.01))
    async def flaky(job: wh.Job) -> str:
        if job.attempt == 1:
            raise wh.JobError(503, "first attempt fails")
        return "ok"

    @app.handler("give_up")
    async def give_up(job: wh.Job) -> None:
        job.ctx.status = wh.Status.CANCELLED

    @app.handler("fan_out")
    async def fan_out(job: wh.Job) -> list[str]:
        refs = await app.enqueue_many([wh.Job("greet", args={"name": name})
                                       for name in job.args["names"]])
        return [ref.id for ref in refs if ref is not None]


app = wh.App()  # $WORKHORSE_URL
register_handlers(app)
