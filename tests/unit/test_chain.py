import asyncio
import logging
import threading

import pytest

import workhorse as wh


def tracer(label, trail):
    def adapter(handler):
        async def traced(job):
            trail.append(f"{label}>")
            try:
                return await handler(job)
            finally:
                trail.append(f"<{label}")

        return traced

    return adapter


async def run_once(app, job):
    async with wh.LocalWorker(app) as worker:
        return await worker.perform(job, sync=True)


async def test_adapters_run_in_the_order_given_outermost_first():
    trail = []
    app = wh.App("memory://")
    app.use(tracer("a", trail), tracer("b", trail))
    app.use(tracer("c", trail))

    @app.handler("work", adapters=[tracer("h1", trail), tracer("h2", trail)])
    async def work(job: wh.Job) -> None:
        trail.append("handler")

    done = await run_once(app, wh.Job("work"))
    assert done.status is wh.Status.SUCCESS
    assert trail == ["a>", "b>", "c>", "h1>", "h2>", "handler",
                     "<h2", "<h1", "<c", "<b", "<a"]


async def test_context_values_flow_down_the_chain_and_status_up():
    seen = {}
    app = wh.App("memory://")

    def set_tenant(handler):
        async def wrapped(job):
            job.ctx.set("tenant", "acme")
            result = await handler(job)
            seen["status_after"] = job.ctx.status
            return result

        return wrapped

    app.use(set_tenant)

    @app.handler("work")
    async def work(job: wh.Job) -> str:
        seen["tenant"] = job.ctx.get("tenant")
        job.ctx.status = wh.Status.NO_RESPONSE
        return "nothing to do"

    done = await run_once(app, wh.Job("work"))
    assert seen == {"tenant": "acme", "status_after": wh.Status.NO_RESPONSE}
    assert done.status is wh.Status.NO_RESPONSE
    assert done.result == "nothing to do"
    assert done.ctx.values() == {"tenant": "acme"}


async def test_returning_normally_means_success_and_result_is_kept():
    app = wh.App("memory://")
    app.register("add", lambda job: job.args["a"] + job.args["b"])
    done = await run_once(app, wh.Job("add", args={"a": 2, "b": 3}))
    assert (done.status, done.result, done.attempt) == (wh.Status.SUCCESS, 5, 1)


async def test_exceptions_become_500_and_job_errors_keep_their_status():
    app = wh.App("memory://")

    @app.handler("boom")
    async def boom(job: wh.Job) -> None:
        raise ValueError("disk on fire")

    @app.handler("closed")
    async def closed(job: wh.Job) -> None:
        raise wh.JobError(403, "account closed")

    failed = await run_once(app, wh.Job("boom"))
    assert failed.status is wh.Status.INTERNAL_ERROR
    assert failed.error == "ValueError: disk on fire"
    assert "disk on fire" in failed.traceback and "Traceback" in failed.traceback
    forbidden = await run_once(app, wh.Job("closed"))
    assert (forbidden.status, forbidden.error) == (wh.Status.FORBIDDEN, "account closed")


async def test_recover_turns_exceptions_into_status_for_outer_adapters():
    seen = []
    app = wh.App("memory://")

    def observe(handler):
        async def wrapped(job):
            await handler(job)  # would raise without recover() inside
            seen.append(job.ctx.status)

        return wrapped

    app.use(observe, wh.middleware.recover())

    @app.handler("boom")
    async def boom(job: wh.Job) -> None:
        raise RuntimeError("kaput")

    done = await run_once(app, wh.Job("boom"))
    assert seen == [wh.Status.INTERNAL_ERROR]
    assert done.status is wh.Status.INTERNAL_ERROR
    assert "RuntimeError: kaput" in done.traceback


async def test_timeout_cancels_the_handler_with_408():
    cancelled = asyncio.Event()
    app = wh.App("memory://")

    @app.handler("slow", timeout=0.05)
    async def slow(job: wh.Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    done = await run_once(app, wh.Job("slow"))
    assert done.status is wh.Status.TIMEOUT
    assert done.error == "timed out after 0.05s"
    assert cancelled.is_set()


async def test_timeout_adapter_uses_its_own_limit():
    app = wh.App("memory://")
    app.use(wh.middleware.timeout(0.05))

    @app.handler("slow")
    async def slow(job: wh.Job) -> None:
        await asyncio.Event().wait()

    assert (await run_once(app, wh.Job("slow"))).status is wh.Status.TIMEOUT
    with pytest.raises(ValueError, match="positive"):
        wh.middleware.timeout(0)


async def test_sync_handlers_run_in_a_thread_without_blocking_the_loop():
    release = threading.Event()
    thread_names = []
    app = wh.App("memory://")

    @app.handler("blocking")
    def blocking(job: wh.Job) -> str:
        thread_names.append(threading.current_thread().name)
        # If this ran on the event loop, nothing could set the event: wait() would time out.
        assert release.wait(5)
        return "done"

    async with wh.LocalWorker(app) as worker:
        task = await worker.perform(wh.Job("blocking"))
        await asyncio.sleep(0)  # the loop keeps running while the handler blocks
        release.set()
        done = await task
    assert done.status is wh.Status.SUCCESS and done.result == "done"
    assert thread_names[0].startswith("workhorse")
    assert thread_names[0] != threading.main_thread().name


async def test_logging_adapter_emits_structured_fields(caplog):
    app = wh.App("memory://")
    app.use(wh.middleware.logging())

    @app.handler("greet", queue="mail")
    async def greet(job: wh.Job) -> None:
        if job.args.get("fail"):
            raise wh.JobError(503, "smtp down")

    caplog.set_level(logging.INFO, logger="workhorse.job")
    ok = await run_once(app, wh.Job("greet", queue="mail", args={"email": "a@b.c"}))
    bad = await run_once(app, wh.Job("greet", args={"fail": True}))
    # One line per run: the adapter's, so the LocalWorker running them logs none of its own.
    first, second = (r for r in caplog.records if r.name == "workhorse.job")
    assert (first.job_id, first.job_name, first.queue, first.attempt, first.status) == (
        ok.id, "greet", "mail", 1, 200)
    assert first.levelno == logging.INFO and first.duration_ms >= 0
    assert (second.job_id, second.status, second.levelno) == (bad.id, 503, logging.WARNING)
    assert "smtp down" in second.getMessage() and "smtp down" in second.error
    # No payloads by default: they may hold personal data.
    assert "a@b.c" not in first.getMessage() and not hasattr(first, "job_args")


async def test_logging_adapter_logs_payloads_only_when_asked(caplog):
    app = wh.App("memory://")
    app.use(wh.middleware.logging(payloads=True))
    app.register("echo", lambda job: {"to": job.args["email"]})
    caplog.set_level(logging.INFO, logger="workhorse.job")
    await run_once(app, wh.Job("echo", args={"email": "a@b.c"}))
    [record] = [r for r in caplog.records if r.name == "workhorse.job"]
    assert "a@b.c" in record.getMessage() and record.job_result == {"to": "a@b.c"}


async def test_timing_adapter_reports_duration():
    measured = []
    app = wh.App("memory://")
    app.use(wh.middleware.timing(lambda job, seconds: measured.append((job.name, seconds))))
    app.register("noop", lambda job: None)
    done = await run_once(app, wh.Job("noop"))
    assert measured[0][0] == "noop" and measured[0][1] >= 0
    assert done.ctx.get("duration") == measured[0][1]


async def test_app_use_after_a_run_applies_to_the_next_run():
    trail = []
    app = wh.App("memory://")
    app.register("noop", lambda job: None)
    async with wh.LocalWorker(app) as worker:
        await worker.perform(wh.Job("noop"), sync=True)
        app.use(tracer("late", trail))
        await worker.perform(wh.Job("noop"), sync=True)
    assert trail == ["late>", "<late"]


def test_use_rejects_non_callables():
    with pytest.raises(TypeError):
        wh.App("memory://").use("logging")
