"""Faults on SQLite with real worker processes: SIGKILL mid-run, limits across processes,
garbage written straight into the store."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import time
from collections import Counter

import pytest

import workhorse as wh

from .procs import enqueue_work, read_log, start_worker, states, stop, wait_for

pytestmark = pytest.mark.slow


def store_url(tmp_path):
    return "sqlite:///" + str(tmp_path / "faults.db")




def test_sigkill_mid_run_loses_nothing(tmp_path):
    url, log = store_url(tmp_path), tmp_path / "attempts.log"
    ids = asyncio.run(enqueue_work(url, 200, 0.05))
    first = start_worker(url, log, "-c", "8", "--lease", "1")
    second = None
    try:
        wait_for(lambda: len(read_log(log)) >= 60, 60, "the first worker to get going")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.time()
        second = start_worker(url, log, "-c", "8", "--lease", "1")
        wait_for(lambda: asyncio.run(states(url))[wh.State.SUCCEEDED] == 200, 120,
                 "all 200 jobs to succeed")
    finally:
        stop(first)
        if second is not None:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    entries = read_log(log)
    ended = Counter(e.job_id for e in entries if e.kind == "end")
    missing = set(ids) - set(ended)
    duplicates = sum(n - 1 for n in ended.values() if n > 1)
    started_twice = {e.job_id for e in entries if e.kind == "start" and e.attempt > 1}
    restart_delays = [e.at - killed_at for e in entries
                      if e.kind == "start" and e.job_id in started_twice and e.attempt > 1]
    print(f"\nSIGKILL with 200 jobs: missing={len(missing)} duplicates={duplicates} "
          f"rerun={len(started_twice)} first restart after {min(restart_delays, default=0):.2f}s")
    assert missing == set()
    assert started_twice, "the kill should have interrupted some jobs"
    assert second.returncode == 0


def test_max_concurrency_holds_across_two_processes(tmp_path):
    url, log = store_url(tmp_path), tmp_path / "attempts.log"
    workers = [start_worker(url, log, "-c", "4") for _ in range(2)]

    async def enqueue() -> None:
        app = wh.App(url)
        try:
            backend = await app.backend()
            async with asyncio.timeout(60):  # other processes: nothing to await but polls
                while len(await backend.workers()) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            # The first job holds the only slot for a while; the process that runs it is
            # then told to stop, so the other one must wait for the slot and do the rest.
            await app.enqueue("exclusive", {"hold": 1.0})
            await app.enqueue_many([wh.Job("exclusive") for _ in range(60)])
        finally:
            await app.close()

    try:
        asyncio.run(enqueue())
        wait_for(lambda: any(e.kind == "start" for e in read_log(log)), 60, "the first job")
        holder = read_log(log)[0].pid
        next(p for p in workers if p.pid == holder).send_signal(signal.SIGTERM)
        wait_for(lambda: asyncio.run(states(url))[wh.State.SUCCEEDED] == 61, 120,
                 "all 61 exclusive jobs")
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(timeout=30)
    entries = read_log(log)
    spans = {}
    for entry in entries:
        start, end = spans.get(entry.job_id, (None, None))
        spans[entry.job_id] = (entry.at, end) if entry.kind == "start" else (start, entry.at)
    ordered = sorted(spans.values())
    overlaps = sum(1 for (_, end), (start, _) in itertools.pairwise(ordered) if start < end)
    pids = {e.pid for e in entries}
    print(f"\nmax_concurrency=1 over {len(pids)} processes: overlaps={overlaps}")
    assert len(spans) == 61
    assert pids == {p.pid for p in workers}
    assert overlaps == 0
    assert all(proc.returncode == 0 for proc in workers)


def test_garbage_in_the_store_goes_dead_and_the_worker_keeps_going(tmp_path):
    url, log = store_url(tmp_path), tmp_path / "attempts.log"
    good = asyncio.run(enqueue_work(url, 1, 0.0))
    proc = start_worker(url, log, "-c", "2")
    try:
        wait_for(lambda: asyncio.run(states(url))[wh.State.SUCCEEDED] == 1, 60, "the first job")
        # Corrupt a copy of a real row straight in the file, behind workhorse's back.
        db = sqlite3.connect(tmp_path / "faults.db", timeout=10)
        with db:
            columns = [row[1] for row in db.execute("PRAGMA table_info(workhorse_jobs)")]
            assert "payload" in columns
            row = dict(zip(columns, db.execute(
                "SELECT * FROM workhorse_jobs WHERE id = ?", good).fetchone(), strict=True))
            for job_id, name, payload in [("garbage-1", "work", b"\xff\xfe{"),
                                          ("garbage-2", "no_such_handler", b"{}")]:
                row.update(id=job_id, name=name, payload=payload, state="ready", attempt=0,
                           token=None, lease_owner=None, lease_expires_at=None, status=None,
                           result=None, finished_at=None, started_at=None,
                           idempotency_key=None, unique_key=None)
                if "seq" in row:
                    row["seq"] = None
                names = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                db.execute(f"INSERT INTO workhorse_jobs ({names}) VALUES ({marks})",
                           list(row.values()))
        db.close()
        later = asyncio.run(enqueue_work(url, 5, 0.0))
        wait_for(lambda: asyncio.run(states(url))[wh.State.SUCCEEDED] == 6, 60, "later jobs")
        wait_for(lambda: asyncio.run(states(url))[wh.State.DEAD] == 2, 60, "garbage to die")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    async def dead() -> list:
        app = wh.App(url)
        try:
            return [await (await app.backend()).get(i) for i in ("garbage-1", "garbage-2")]
        finally:
            await app.close()

    undecodable, unknown = asyncio.run(dead())
    assert (undecodable.status, unknown.status) == (400, 400)
    assert undecodable.error.startswith("undecodable payload")
    assert "no_such_handler" in unknown.error
    assert len(later) == 5
    assert proc.returncode == 0


def test_default_settings_restart_a_killed_workers_jobs_within_30_seconds(tmp_path):
    url, log = store_url(tmp_path), tmp_path / "attempts.log"
    ids = asyncio.run(enqueue_work(url, 4, 60.0))  # long jobs: surely in flight at the kill
    first = start_worker(url, log, "-c", "4")
    second = start_worker(url, log, "-c", "4", "--queues", "other")  # idle: reaps only
    third = None
    try:
        wait_for(lambda: len(read_log(log)) >= 4, 60, "the four jobs to start")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.time()
        third = start_worker(url, log, "-c", "4")
        wait_for(lambda: sum(e.attempt == 2 for e in read_log(log)) >= 4, 40,
                 "the killed worker's jobs to start again")
    finally:
        for proc in (first, second, third):
            if proc is not None:
                stop(proc)
    restarts = [e.at - killed_at for e in read_log(log) if e.attempt == 2]
    print(f"\ndefault settings: killed worker's jobs restarted after "
          f"{min(restarts):.1f}-{max(restarts):.1f}s")
    assert sorted(e.job_id for e in read_log(log) if e.attempt == 2) == sorted(ids)
    assert max(restarts) <= 30
