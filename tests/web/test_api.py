"""The JSON API against real stores (SQLite, Redis, PostgreSQL) holding jobs in every state."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from starlette.applications import Starlette

import workhorse as wh
from workhorse.web.api import Api

STATES = ["scheduled", "ready", "running", "retrying", "succeeded", "dead", "cancelled"]


async def test_stats_and_queues_count_every_state(client: httpx.AsyncClient) -> None:
    stats = (await client.get("/api/stats")).json()
    assert {s: stats["counts"][s] for s in STATES} == {
        "scheduled": 1, "ready": 1, "running": 1, "retrying": 1, "succeeded": 1, "dead": 2,
        "cancelled": 1}
    assert stats["workers"] == 1 and stats["busy"] == 1 and stats["paused"] == []
    queues = {q["name"]: q for q in (await client.get("/api/queues")).json()}
    assert set(queues) == {"default", "mail", "slow"}
    assert queues["mail"]["counts"]["ready"] == 1 and queues["mail"]["latency"] >= 0
    assert queues["slow"]["counts"]["running"] == 1
    assert queues["default"]["counts"]["dead"] == 2 and not queues["default"]["paused"]


async def test_job_lists_filter_and_page(client: httpx.AsyncClient,
                                         ids: dict[str, str]) -> None:
    for state in STATES:
        page = (await client.get("/api/jobs", params={"state": state})).json()
        assert {j["state"] for j in page["items"]} == {state}, state
        assert page["total"] == len(page["items"])
    dead = (await client.get("/api/jobs?state=dead&name=broken")).json()
    assert [j["id"] for j in dead["items"]] == [ids["dead"]]
    mail = (await client.get("/api/jobs?queue=mail")).json()
    assert [j["id"] for j in mail["items"]] == [ids["ready"]]
    everything = (await client.get("/api/jobs")).json()
    assert everything["total"] == 8
    first = (await client.get("/api/jobs?limit=3")).json()
    rest = (await client.get("/api/jobs?limit=50&offset=3")).json()
    assert first["total"] == rest["total"] == 8 and len(first["items"]) == 3
    seen = [j["id"] for j in first["items"] + rest["items"]]
    assert sorted(seen) == sorted(j["id"] for j in everything["items"])


async def test_one_job_shows_args_attempts_error_and_result(
        client: httpx.AsyncClient, ids: dict[str, str]) -> None:
    dead = (await client.get(f"/api/jobs/{ids['dead']}")).json()
    assert dead["state"] == "dead" and dead["status"] == 400
    assert dead["args"] == {"address": "<b>nobody</b>@example"}
    assert dead["error"] == "no such address: <b>nobody</b>@example"
    assert [(a["attempt"], a["status"]) for a in dead["attempts"]] == [(1, 400)]
    retrying = (await client.get(f"/api/jobs/{ids['retrying']}")).json()
    assert retrying["status"] == 500 and "the service is down" in retrying["error"]
    assert "RuntimeError" in retrying["attempts"][-1]["traceback"]
    done = (await client.get(f"/api/jobs/{ids['succeeded']}")).json()
    assert done["result"] == {"hello": "Ada"} and done["finished_at"] >= done["started_at"]
    missing = await client.get("/api/jobs/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and "no job" in missing.json()["error"]


async def test_workers_and_busy_jobs_with_checkins(client: httpx.AsyncClient,
                                                   ids: dict[str, str]) -> None:
    workers = (await client.get("/api/workers")).json()
    [worker] = workers["workers"]
    assert worker["id"] == ids["worker"] and worker["queues"] == ["slow"]
    assert worker["last_beat"] <= workers["now"]
    [job] = (await client.get("/api/busy")).json()["jobs"]
    assert job["id"] == ids["running"] and job["lease_owner"] == ids["worker"]
    assert job["checkin"] == "step 7/1000" and job["checkin_at"] is not None


async def test_retry_requeue_and_delete_one_job(client: httpx.AsyncClient,
                                                ids: dict[str, str]) -> None:
    retried = await client.post(f"/api/jobs/{ids['dead']}/retry")
    assert retried.status_code == 200 and retried.json()["done"] is True
    assert (await client.get(f"/api/jobs/{ids['dead']}")).json()["state"] == "ready"
    again = await client.post(f"/api/jobs/{ids['dead']}/retry")
    assert again.status_code == 409 and "ready" in again.json()["error"]
    assert (await client.post("/api/jobs/nosuchjob/retry")).status_code == 404

    assert (await client.post(f"/api/jobs/{ids['scheduled']}/requeue")).status_code == 200
    scheduled = (await client.get(f"/api/jobs/{ids['scheduled']}")).json()
    assert scheduled["state"] == "ready" and scheduled["run_at"] <= time.time() + 1
    assert (await client.post(f"/api/jobs/{ids['succeeded']}/requeue")).status_code == 409

    assert (await client.delete(f"/api/jobs/{ids['cancelled']}")).status_code == 200
    assert (await client.get(f"/api/jobs/{ids['cancelled']}")).status_code == 404
    assert (await client.post(f"/api/jobs/{ids['succeeded']}/delete")).status_code == 200
    running = await client.delete(f"/api/jobs/{ids['running']}")
    assert running.status_code == 409 and "running" in running.json()["error"]
    assert (await client.delete("/api/jobs/nosuchjob")).status_code == 404


async def test_bulk_actions_report_what_they_skipped(client: httpx.AsyncClient,
                                                     ids: dict[str, str]) -> None:
    reply = await client.post("/api/jobs/bulk", json={
        "action": "retry", "ids": [ids["dead"], ids["retrying"], ids["ready"], "nosuchjob"]})
    assert reply.status_code == 200
    assert reply.json() == {"action": "retry", "done": [ids["dead"], ids["retrying"]],
                            "skipped": [ids["ready"], "nosuchjob"]}
    deleted = (await client.post("/api/jobs/bulk", json={
        "action": "delete", "ids": [ids["ready"], ids["running"]]})).json()
    assert deleted["done"] == [ids["ready"]] and deleted["skipped"] == [ids["running"]]


async def test_retry_all_requeue_all_and_delete_all(client: httpx.AsyncClient) -> None:
    only_broken = await client.post("/api/jobs/retry-all?state=dead&name=broken")
    assert only_broken.json() == {"count": 1}
    assert (await client.post("/api/jobs/retry-all")).json() == {"count": 1}  # dead by default
    assert (await client.get("/api/stats")).json()["counts"]["dead"] == 0
    assert (await client.post("/api/jobs/requeue-all?state=scheduled")).json() == {"count": 1}
    assert (await client.post("/api/jobs/delete-all?state=cancelled")).json() == {"count": 1}
    refused = await client.post("/api/jobs/delete-all")
    assert refused.status_code == 400 and "state is required" in refused.json()["error"]
    assert (await client.post("/api/jobs/delete-all?state=running")).status_code == 400
    assert (await client.post("/api/jobs/retry-all?state=succeeded")).status_code == 400


async def test_pause_resume_and_purge_a_queue(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/queues/mail/pause")).json() == {"queue": "mail",
                                                                    "paused": True}
    queues = {q["name"]: q for q in (await client.get("/api/queues")).json()}
    assert queues["mail"]["paused"] and not queues["default"]["paused"]
    assert (await client.get("/api/stats")).json()["paused"] == ["mail"]
    # A queue with no jobs can be paused ahead of its first job, and then shows up.
    await client.post("/api/queues/reports%2Fdaily/pause")
    assert "reports/daily" in (await client.get("/api/stats")).json()["paused"]
    assert (await client.post("/api/queues/mail/resume")).json()["paused"] is False
    assert (await client.get("/api/stats")).json()["paused"] == ["reports/daily"]
    assert (await client.post("/api/queues/mail/purge")).json() == {"queue": "mail", "count": 1}
    assert (await client.get("/api/jobs?queue=mail")).json()["total"] == 0


@pytest.mark.parametrize(("method", "path", "body", "message"), [
    ("GET", "/api/jobs?state=lost", None, "state must be one of"),
    ("GET", "/api/jobs?limit=0", None, "limit must be between 1 and 500"),
    ("GET", "/api/jobs?limit=ten", None, "limit must be an integer"),
    ("GET", "/api/jobs?offset=-1", None, "offset must be between"),
    ("GET", "/api/jobs?queue=" + "q" * 600, None, "queue is longer than"),
    ("GET", "/api/metrics?step=x", None, "step must be an integer"),
    ("POST", "/api/jobs/bulk", b"not json", "the body must be"),
    ("POST", "/api/jobs/bulk", b'{"action": "explode", "ids": []}', "the body must be"),
    ("POST", "/api/jobs/bulk", b'{"action": "retry", "ids": "abc"}', "the body must be"),
    ("POST", "/api/jobs/retry-all?state=ready", None, "state must be one of"),
])
async def test_bad_input_is_a_400_that_says_why(empty_client: httpx.AsyncClient, method: str,
                                                path: str, body: bytes | None,
                                                message: str) -> None:
    reply = await empty_client.request(method, path, content=body)
    assert reply.status_code == 400
    assert message in reply.json()["error"]


async def test_metrics_fill_the_last_hour_then_count_new_finishes(
        seeded: tuple[wh.App, dict[str, str]], web: Starlette,
        client: httpx.AsyncClient) -> None:
    app, _ = seeded
    metrics = (await client.get("/api/metrics")).json()
    assert metrics["window"] == 3600 and metrics["interval"] == 3600
    # Filled from the finished_at of the jobs that finished before the dashboard started.
    assert sum(p["succeeded"] for p in metrics["points"]) == 1
    assert sum(p["failed"] for p in metrics["points"]) == 2
    per_minute = (await client.get("/api/metrics?step=60")).json()
    assert per_minute["step"] == 3600  # never finer than the samples
    # A job finishes and the next sample counts it, with the latency at that moment.
    ref = await app.enqueue("greet", {"name": "again"})
    worker = wh.Worker(app, concurrency=1, queues=["default"], poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        await ref.result(timeout=10)
    finally:
        await worker.stop()
        await task
    await web.state.sampler.sample()
    last = (await client.get("/api/metrics")).json()["points"][-1]
    assert last["succeeded"] == 1 and last["failed"] == 0 and last["ready"] == 1
    assert last["latency"] > 0  # the ready mail job has been waiting


def test_openapi_document_covers_every_route() -> None:
    from workhorse.web.openapi import openapi_document

    document = openapi_document()
    routes: set[tuple[str, str]] = set()
    for route in Api(None, None).routes():  # type: ignore[arg-type]
        for method in route.methods or ():  # type: ignore[attr-defined]
            if method != "HEAD":
                path = route.path.replace(":path", "")  # type: ignore[attr-defined]
                routes.add((path, method.lower()))
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes - {("/api/openapi.json", "get")} == documented


async def test_openapi_document_is_served_with_the_mount_point(
        client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/openapi.json")).json()
    assert document["openapi"].startswith("3.") and document["servers"] == [{"url": "/"}]
    assert "security" not in document
