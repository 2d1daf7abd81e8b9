"""Hooks in-process, the job log line, JSON log records, and the health port and adapter."""

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request

import pytest

import workhorse as wh
from workhorse.health import HealthServer, liveness, readiness, serve_worker
from workhorse.jsonlog import JsonFormatter


def recorder(app):
    events = []
    app.hooks(on_queued=lambda e: events.append(e), on_start=lambda e: events.append(e),
              on_finish=lambda e: events.append(e))
    return events


# -- hooks on the LocalWorker ----------------------------------------------------------------

async def test_local_worker_calls_hooks_once_each_in_order():
    app = wh.App("memory://")
    events = recorder(app)

    @app.handler("greet")
    async def greet(job: wh.Job) -> str:
        if job.args.get("fail"):
            raise wh.JobError(503, "later")
        return f"hi {job.args['name']}"

    async with wh.LocalWorker(app, log_runs=False) as worker:
        done = await worker.perform(wh.Job("greet", args={"name": "ada"}), sync=True)
        failed = await worker.perform(wh.Job("greet", args={"fail": True}), sync=True)
        later = await (worker.perform_in(wh.Job("greet", args={"name": "bob"}), 0.01))
    assert [(e.kind, e.id) for e in events] == [
        ("queued", done.id), ("start", done.id), ("finish", done.id),
        ("queued", failed.id), ("start", failed.id), ("finish", failed.id),
        ("queued", later.id), ("start", later.id), ("finish", later.id)]
    queued, start, finish = events[:3]
    assert (queued.state, queued.attempt, start.state, start.attempt) == (
        wh.State.READY, 0, wh.State.RUNNING, 1)
    assert (finish.state, finish.status, finish.result) == (
        wh.State.SUCCEEDED, wh.Status.SUCCESS, "hi ada")
    assert finish.duration is not None and finish.duration >= 0
    # In-process runs are never retried: a failed run ends DEAD.
    assert (events[5].state, events[5].status, events[5].error) == (
        wh.State.DEAD, wh.Status.UNAVAILABLE, "later")
    assert events[6].state is wh.State.SCHEDULED


async def test_local_worker_hook_that_raises_is_logged_and_harmless(caplog):
    app = wh.App("memory://")

    def bad(event):
        raise RuntimeError("bug")

    app.hooks(on_start=bad, on_finish=bad)
    events = recorder(app)
    app.register("noop", lambda job: "ok")
    caplog.set_level(logging.ERROR, logger="workhorse.hooks")
    async with wh.LocalWorker(app, log_runs=False) as worker:
        done = await worker.perform(wh.Job("noop"), sync=True)
    assert done.result == "ok" and [e.kind for e in events] == ["queued", "start", "finish"]
    assert [r.getMessage().split(" failed")[0].rsplit(".", 1)[-1]
            for r in caplog.records if r.name == "workhorse.hooks"] == [
        "bad (on_start)", "bad (on_finish)"]


async def test_local_worker_cancelled_run_finishes_cancelled():
    app = wh.App("memory://")
    events = recorder(app)
    started = asyncio.Event()
    app.hooks(on_start=lambda event: started.set())

    @app.handler("slow")
    async def slow(job: wh.Job) -> None:
        await asyncio.sleep(10)

    async with wh.LocalWorker(app, log_runs=False) as worker:
        task = await worker.perform(wh.Job("slow"))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(e.kind, e.state) for e in events] == [
        ("queued", wh.State.READY), ("start", wh.State.RUNNING),
        ("finish", wh.State.CANCELLED)]


# -- the job log line ---------------------------------------------------------------------------

async def test_worker_logs_one_line_per_run_without_payloads(caplog):
    app = wh.App("memory://")

    @app.handler("mail", retries=1, backoff=wh.constant(0.01))
    async def mail(job: wh.Job) -> dict:
        if job.attempt == 1:
            raise wh.JobError(503, "smtp down")
        return {"sent_to": job.args["email"]}

    caplog.set_level(logging.INFO, logger="workhorse.job")
    ref = await app.enqueue("mail", {"email": "someone@example.com"})
    worker = wh.Worker(app, poll_interval=0.05, prune_interval=0)
    await worker.start()
    try:
        await ref.result(timeout=10)
    finally:
        await worker.stop(timeout=5)
        await app.close()
    first, second = (r for r in caplog.records if r.name == "workhorse.job")
    assert (first.job_id, first.job_name, first.queue, first.attempt, first.status,
            first.state, first.error, first.levelno) == (
        ref.id, "mail", "default", 1, 503, "retrying", "smtp down", logging.WARNING)
    assert (second.attempt, second.status, second.state, second.error, second.levelno) == (
        2, 200, "succeeded", None, logging.INFO)
    assert second.duration_ms >= 0
    for record in (first, second):
        assert "example.com" not in record.getMessage()
        assert not hasattr(record, "job_args") and not hasattr(record, "job_result")


async def test_worker_logs_payloads_when_asked(caplog):
    app = wh.App("memory://")
    app.register("echo", lambda job: job.args["word"])
    caplog.set_level(logging.INFO, logger="workhorse.job")
    ref = await app.enqueue("echo", {"word": "hello"})
    worker = wh.Worker(app, poll_interval=0.05, prune_interval=0, log_payloads=True)
    await worker.start()
    try:
        await ref.result(timeout=10)
    finally:
        await worker.stop(timeout=5)
        await app.close()
    [record] = [r for r in caplog.records if r.name == "workhorse.job"]
    assert (record.job_args, record.job_result) == ({"word": "hello"}, "hello")


def test_json_formatter_writes_one_object_per_record():
    record = logging.LogRecord("workhorse.job", logging.INFO, __file__, 1, "job %s done",
                               ("x",), None)
    record.job_id, record.status, record.obj = "abc", 200, object()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert (parsed["logger"], parsed["level"], parsed["message"], parsed["job_id"],
            parsed["status"]) == ("workhorse.job", "INFO", "job x done", "abc", 200)
    assert parsed["obj"].startswith("<object") and parsed["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exc_info"]


# -- the health port --------------------------------------------------------------------------

def get(url, timeout=10.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_liveness_goes_unhealthy_while_the_loop_is_blocked():
    loop = asyncio.get_running_loop()
    server = HealthServer(port=0, host="127.0.0.1")
    server.route("/healthz", liveness(loop, timeout=0.2))
    server.route("/extra", lambda: (200, "text/plain", b"extra\n"))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert await asyncio.to_thread(get, base + "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, base + "/extra") == (200, "extra\n")
        assert (await asyncio.to_thread(get, base + "/nope"))[0] == 404
        # Block the loop (as a sync handler run on it would) while a probe comes in.
        probe = loop.run_in_executor(None, get, base + "/healthz")
        time.sleep(0.6)  # noqa: ASYNC251 (blocking the loop is the point)
        status, body = await probe
        assert status == 503 and "did not answer" in body
    finally:
        server.stop()


async def test_readiness_follows_the_probe():
    loop = asyncio.get_running_loop()
    answers = {"ok": True}

    async def probe():
        if not answers["ok"]:
            raise ConnectionError("store gone")
        return 1

    server = HealthServer(port=0, host="127.0.0.1")
    server.route("/readyz", readiness(loop, probe, timeout=0.5))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/readyz"
        assert (await asyncio.to_thread(get, url))[0] == 200
        answers["ok"] = False
        status, body = await asyncio.to_thread(get, url)
        assert status == 503 and "store gone" in body
    finally:
        server.stop()
    with pytest.raises(ValueError):
        server.route("metrics", lambda: (200, "text/plain", b""))


async def test_serve_worker_routes_health_and_the_health_adapter():
    app = wh.App("memory://")
    check = wh.middleware.HealthCheck(window=60, max_error_ratio=0.5, min_runs=2)
    app.use(wh.middleware.health(check))

    @app.handler("job", retries=0)
    async def job(job: wh.Job) -> None:
        if job.args.get("fail"):
            raise RuntimeError("broken")

    worker = wh.Worker(app, poll_interval=0.05, prune_interval=0, log_runs=False)
    await worker.start()
    server = serve_worker(worker, 0, "127.0.0.1")
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert server.paths == ["/healthz", "/healthz/jobs", "/readyz"]
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 200
        for fail in (False, True, True):
            ref = await app.enqueue("job", {"fail": fail})
            await app.wait_idle(timeout=10)
            assert await ref.status() is not None
        status, body = await asyncio.to_thread(get, base + "/healthz/jobs")
        assert status == 503 and json.loads(body)["errors"] == 2
    finally:
        server.stop()
        await worker.stop(timeout=5)
        await app.close()


def test_health_check_counts_errors_in_its_window():
    check = wh.middleware.HealthCheck(window=0.2, max_error_ratio=0.5, min_runs=3)
    check.record(wh.Status.INTERNAL_ERROR)
    check.record(wh.Status.TIMEOUT)
    assert check.healthy  # too few runs to judge
    check.record(wh.Status.FORBIDDEN)  # the job's own fault: a run, not an error
    assert check.counts() == (3, 2) and not check.healthy
    time.sleep(0.25)
    assert check.counts() == (0, 0) and check.healthy
    with pytest.raises(ValueError):
        wh.middleware.HealthCheck(max_error_ratio=2)


def test_each_worker_process_gets_its_own_health_port():
    from workhorse.cli import _nth_port

    args = ["worker", "app:app", "--metrics-port", "9100", "-c", "2"]
    assert _nth_port(args, 0) == args
    assert _nth_port(args, 2)[3] == "9102"
    assert _nth_port(["worker", "--metrics-port=9100"], 1) == ["worker", "--metrics-port=9101"]


async def test_local_worker_logs_each_run_and_failures_at_warning(caplog):
    app = wh.App("memory://")

    @app.handler("maybe")
    async def maybe(job: wh.Job) -> str:
        if job.args["fail"]:
            raise wh.JobError(500, "nope")
        return "yes"

    caplog.set_level(logging.WARNING, logger="workhorse.job")
    async with wh.LocalWorker(app) as worker:
        await worker.perform(wh.Job("maybe", args={"fail": False}), sync=True)
        bad = await worker.perform(wh.Job("maybe", args={"fail": True}), sync=True)
    # INFO is off here: only the failed run's WARNING line comes through.
    [record] = [r for r in caplog.records if r.name == "workhorse.job"]
    assert (record.job_id, record.status, record.state, record.error, record.levelno) == (
        bad.id, 500, "dead", "nope", logging.WARNING)
