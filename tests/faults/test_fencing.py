"""Leases and fencing under faults (issue 7, scenarios 3, 4, 11 and 12).

- A slow async handler keeps its lease, and so does one that blocks its worker's event loop
  (renewal runs on the lease keeper's thread); the blocked loop is reported.
- A stale owner (SIGSTOPped past its lease while another worker finished its job) has its
  ack refused by the attempt token, and learns that its lease was lost.
- An unprintable exception or an unserializable result is recorded with a readable error,
  and the worker goes on to the next job.
- A worker whose wall clock is five minutes off runs nothing early or late and requeues
  nothing early: due times, leases and reaping use the store's clock.

Worker processes run ``app_fencing:app``, whose handlers log each run outside the store,
stamped with the store's clock. Where the failure to catch is a lease that lapses, the test
process plays the eagerest reaper there could be, reaping several times a second.

Clock skew and SQLite or memory: those stores have no clock of their own; the store's clock
is the host's, read by whichever process makes a move, and every process on one host reads
the same clock, so one skewed worker process is not a thing there (a jump of the host clock
moves every due time and lease with it). What does apply is tested: the runtime takes no
decision from its own clock when the store's clock differs from it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import workhorse as wh
from workhorse import codec
from workhorse.backends.base import Backend, State

from .procs import Entry, read_log, start_skewed_worker, start_worker, stop

pytestmark = pytest.mark.slow

APP = "app_fencing:app"
#: The lease of every worker here: short, so that a lapse would show within a second.
LEASE = 1.0
#: Five minutes, the clock skew of scenario 12.
SKEW = 300.0

REDIS = os.environ.get("WORKHORSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("WORKHORSE_TEST_POSTGRES_URL",
                          "postgresql://postgres@127.0.0.1:5432/test")


# -- stores, processes, waiting ------------------------------------------------------------------

def private_url(kind: str, tmp_path: Path) -> str:
    """A store of ``kind`` private to one test: a file, a Redis namespace or a schema."""
    tag = f"whfence_{uuid.uuid4().hex[:12]}"
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return "sqlite:///" + str(tmp_path / "fencing.db")
    if kind == "redis":
        return f"{REDIS}{'&' if '?' in REDIS else '?'}namespace={tag}"
    return f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}schema={tag}"


def drop(url: str) -> None:
    """Remove what a test left on a server: its Redis namespace or PostgreSQL schema."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url.split("?")[0])
        try:
            keys = list(client.scan_iter(match="{" + query["namespace"] + "}*", count=10_000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    elif url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{query["schema"]}" CASCADE')


def store_fixture(*kinds: str) -> Any:
    """A fixture giving the URL of a private store of each of ``kinds`` in turn. Server
    stores are never skipped: an unreachable Redis or PostgreSQL fails the test."""

    @pytest.fixture(params=kinds)
    def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
        store = private_url(request.param, tmp_path)
        yield store
        drop(store)

    return url


process_store = store_fixture("sqlite", "redis", "postgresql")
any_store = store_fixture("memory", "sqlite", "redis", "postgresql")
server_store = store_fixture("redis", "postgresql")
host_clock_store = store_fixture("memory", "sqlite")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts; killed at the end whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        stop(proc)


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float,
                what: str) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds. What other
    processes do can only be watched, not awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def runs(log: Path, job_id: str, kind: str = "start") -> list[Entry]:
    return [e for e in read_log(log) if e.job_id == job_id and e.kind == kind]


def worker_log(log: Path) -> str:
    path = log.with_suffix(".workers.log")
    return path.read_text() if path.exists() else ""


def kind_of(url: str) -> str:
    return url.split(":", 1)[0]


async def finished(backend: Backend, *job_ids: str) -> bool:
    for job_id in job_ids:
        record = await backend.get(job_id)
        if record is None or record.state.live:
            return False
    return True


async def worker_count(backend: Backend) -> int:
    return len(await backend.workers())


# -- scenario 3: slow and loop-blocking handlers keep their leases ------------------------------

async def test_slow_and_loop_blocking_handlers_keep_their_leases(process_store, procs, tmp_path):
    url, log = process_store, tmp_path / "attempts.log"
    app = wh.App(url)
    try:
        backend = await app.backend()
        procs += [start_worker(url, log, "-c", "1", "--lease", str(LEASE), app=APP)
                  for _ in range(2)]
        await until(lambda: _at_least(worker_count(backend), 2), 30, "both workers to beat")
        slow = await app.enqueue("slow", {"seconds": 3 * LEASE})
        blocked = await app.enqueue("block", {"seconds": 3 * LEASE})
        assert slow is not None and blocked is not None
        reaps = requeued = 0

        async def done() -> bool:
            # An eager reaper: a lease that lapsed for an instant is requeued at once, and
            # the other worker (or this one, after its block) runs the job again.
            nonlocal reaps, requeued
            requeued += await backend.reap(LEASE)
            reaps += 1
            return await finished(backend, slow.id, blocked.id)

        await until(done, 30, "both jobs to finish")
        records = {job_id: await backend.get(job_id) for job_id in (slow.id, blocked.id)}
        alive = [proc.poll() is None for proc in procs]
    finally:
        await app.close()
    started = Counter(e.job_id for e in read_log(log) if e.kind == "start")
    stalls = [line for line in worker_log(log).splitlines() if "loop blocked" in line]
    answered = re.findall(r"answered again after ([\d.]+) s", worker_log(log))
    print(f"\n{kind_of(url)}: a {3 * LEASE:g} s await and a {3 * LEASE:g} s loop block "
          f"under a {LEASE:g} s lease: starts={sorted(started.values())}, reaps={reaps}, "
          f"requeued={requeued}, stall warnings={len(stalls)}, loop answered again after "
          f"{answered} s")
    assert started == Counter({slow.id: 1, blocked.id: 1})
    assert requeued == 0
    for record in records.values():
        assert record is not None
        assert (record.state, record.attempt) == (State.SUCCEEDED, 1)
    assert alive == [True, True]
    # One warning for the one stall, naming the job that was running through it. (A loaded
    # machine may stall a loop briefly elsewhere too: those warnings are not this one.)
    assert len([line for line in stalls if blocked.id in line]) == 1


async def _at_least(count: Awaitable[int], least: int) -> bool:
    return await count >= least


class ThreadWorker:
    """A Worker on an event loop of its own, in a thread, so that a handler blocking that
    loop blocks neither the test nor the test's reaper."""

    def __init__(self, app: wh.App, **options: Any) -> None:
        self._app = app
        self._options = options
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()),
                                        name="test-worker")

    async def _serve(self) -> None:
        worker = wh.Worker(self._app, **self._options)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        await worker.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await worker.stop()

    def __enter__(self) -> ThreadWorker:
        self._thread.start()
        assert self._ready.wait(10), "the worker thread did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the worker thread did not stop"


async def test_memory_loop_blocking_handler_keeps_its_lease(caplog):
    caplog.set_level(logging.WARNING, logger="workhorse")
    app = wh.App("memory://")
    started: Counter[str] = Counter()

    @app.handler("slow")
    async def slow(job: wh.Job) -> None:
        started[job.id] += 1
        await asyncio.sleep(3 * LEASE)

    @app.handler("block")
    async def block(job: wh.Job) -> None:
        started[job.id] += 1
        time.sleep(3 * LEASE)  # noqa: ASYNC251 - the point: it blocks the loop

    backend = await app.backend()
    requeued = 0
    with ThreadWorker(app, concurrency=4, lease=LEASE, schedules=False):
        jobs = [await app.enqueue("slow"), await app.enqueue("block")]
        ids = [ref.id for ref in jobs if ref is not None]

        async def done() -> bool:
            nonlocal requeued
            requeued += await backend.reap(LEASE)
            return await finished(backend, *ids)

        await until(done, 30, "both jobs to finish")
    stalls = [r.getMessage() for r in caplog.records if "loop blocked" in r.getMessage()]
    print(f"\nmemory: starts={sorted(started.values())} requeued={requeued} "
          f"stall warnings={len(stalls)}")
    assert requeued == 0
    assert sorted(started.values()) == [1, 1]
    assert len([stall for stall in stalls if ids[1] in stall]) == 1
    for job_id in ids:
        record = await backend.get(job_id)
        assert record is not None and record.state is State.SUCCEEDED


# -- scenario 4: a stale owner is fenced ---------------------------------------------------------

async def test_a_stale_owner_is_fenced_and_the_second_run_stands(process_store, procs, tmp_path):
    url = process_store
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    app = wh.App(url)
    try:
        backend = await app.backend()
        first = start_worker(url, first_log, "-c", "1", "--lease", str(LEASE), app=APP)
        procs.append(first)
        ref = await app.enqueue("fenced", {"seconds": 2.0})
        assert ref is not None
        await until(lambda: bool(runs(first_log, ref.id)), 30, "the first worker to start")
        first.send_signal(signal.SIGSTOP)
        try:
            async def lapsed() -> bool:
                record = await backend.get(ref.id)
                assert record is not None
                expires = record.lease_expires_at
                return expires is not None and expires < await backend.now()

            await until(lapsed, 10, "the stopped worker's lease to expire")
            # The second worker's reaper requeues the job as it starts; then it runs it.
            second = start_worker(url, second_log, "-c", "1", "--lease", str(LEASE), app=APP)
            procs.append(second)
            await until(lambda: finished(backend, ref.id), 30, "the second worker's run")
            stored = await backend.get(ref.id)
        finally:
            first.send_signal(signal.SIGCONT)
        # On waking, the first run ends its work and the worker tries to record it.
        await until(lambda: bool(runs(first_log, ref.id, "end")), 15, "the first run's end")
        await until(lambda: _mentions(first_log, ref.id, "lease lost"), 15,
                    "the first worker to log that its ack was refused: its lease was lost")
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        final = await backend.get(ref.id)
    finally:
        await app.close()
    lost = [line for line in worker_log(first_log).splitlines()
            if ref.id in line and "lost" in line]
    assert stored is not None and final is not None
    print(f"\n{kind_of(url)} stale owner: first pid={first.pid}, second pid={second.pid}, "
          f"stored result={codec.decode(final.result or b'null')}, attempt={final.attempt}, "
          f"first worker said: {[line.split(' ', 3)[-1] for line in lost]}")
    # The second run stands, before and after the first worker woke and tried to ack.
    for record in (stored, final):
        assert (record.state, record.status, record.attempt) == (State.SUCCEEDED, 200, 2)
        assert codec.decode(record.result or b"null") == second.pid
    assert [(e.attempt, e.pid) for e in runs(first_log, ref.id, "end")] == [(1, first.pid)]
    assert [(e.attempt, e.pid) for e in runs(second_log, ref.id, "end")] == [(2, second.pid)]
    assert any("lease lost" in line for line in lost)  # its ack was refused
    assert first.returncode == 0


def _mentions(log: Path, job_id: str, word: str) -> bool:
    return any(job_id in line and word in line for line in worker_log(log).splitlines())


# -- scenario 11: what cannot be printed or serialized is still recorded ------------------------

class Unprintable(Exception):
    """An exception whose message cannot be read."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class UnprintableKey:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


async def test_unprintable_errors_and_unserializable_results_are_recorded(any_store):
    app = wh.App(any_store)
    app.use(wh.middleware.logging())  # it formats errors too

    @app.handler("raise_unprintable", retries=0)
    async def raise_unprintable(job: wh.Job) -> None:
        raise Unprintable()

    @app.handler("return_object", retries=0)
    async def return_object(job: wh.Job) -> Any:
        return {"when": object()}

    @app.handler("return_unprintable_key", retries=0)
    async def return_unprintable_key(job: wh.Job) -> Any:
        return {UnprintableKey(): 1}

    @app.handler("return_cycle", retries=0)
    async def return_cycle(job: wh.Job) -> Any:
        cycle: list[Any] = []
        cycle.append(cycle)
        return cycle

    @app.handler("sync_raise_unprintable", retries=0)
    def sync_raise_unprintable(job: wh.Job) -> None:
        raise Unprintable()

    @app.handler("fine")
    async def fine(job: wh.Job) -> str:
        return "fine"

    expected = {
        "raise_unprintable": "Unprintable (its message could not be read",
        "return_object": "result['when'] of type object is not JSON-serializable",
        "return_unprintable_key": "result of type dict cannot be encoded",
        "return_cycle": "result of type list cannot be encoded: RecursionError",
        "sync_raise_unprintable": "Unprintable (its message could not be read",
    }
    worker = wh.Worker(app, concurrency=1, lease=5.0, schedules=False)
    try:
        backend = await app.backend()
        refs = {name: await app.enqueue(name) for name in [*expected, "fine"]}
        await worker.start()
        records = {}
        for name, ref in refs.items():
            assert ref is not None
            records[name] = await backend.wait_finished(ref.id, 10)
            assert records[name] is not None, f"{name} is still live"
    finally:
        await worker.stop()
        await app.close()
    print(f"\n{kind_of(any_store)}: " + "; ".join(
        f"{name}: {r.state} {r.status} {r.error!r}" for name, r in records.items() if r))
    for name, prefix in expected.items():
        record = records[name]
        assert record is not None
        assert (record.state, record.status, record.attempt) == (State.DEAD, 500, 1), name
        assert record.error is not None and record.error.startswith(prefix), record.error
    ok = records["fine"]
    assert ok is not None and ok.state is State.SUCCEEDED and codec.decode(ok.result) == "fine"
    assert worker.processed == len(refs)


# -- scenario 12: a worker clock five minutes off decides nothing -----------------------------

async def test_a_skewed_worker_clock_decides_nothing(server_store, procs, tmp_path):
    url, log = server_store, tmp_path / "attempts.log"
    app = wh.App(url)
    try:
        backend = await app.backend()
        behind = start_skewed_worker(url, log, -SKEW, "-c", "1", "--lease", str(LEASE),
                                     app=APP)
        procs.append(behind)
        await until(lambda: _at_least(worker_count(backend), 1), 30, "the slow-clock worker")
        # Held by the worker whose clock is behind: leases it took or renewed by its own
        # clock would have expired before they began.
        hold = await app.enqueue("slow", {"seconds": 4 * LEASE})
        assert hold is not None
        await until(lambda: bool(runs(log, hold.id)), 30, "the long job to start")
        ahead = start_skewed_worker(url, log, SKEW, "-c", "2", "--lease", str(LEASE), app=APP)
        procs.append(ahead)
        # The fast-clock worker reaps as soon as it has beaten: by its own clock the long
        # job's lease expired five minutes ago.
        await until(lambda: _at_least(worker_count(backend), 2), 30, "the fast-clock worker")
        held = await backend.get(hold.id)
        assert held is not None and held.state is State.RUNNING
        now = await backend.now()
        clocks = {info.pid: info.started_at - now for info in await backend.workers()}
        # The skew is in effect: each worker stamps its start with its own clock.
        assert clocks[ahead.pid] > SKEW / 2 and clocks[behind.pid] < -SKEW / 2
        due = await app.enqueue("stamp", at=now + 2.0)
        flaky = await app.enqueue("flaky")
        spawner = await app.enqueue("spawn", {"delay": 2.0})
        refs = [hold, due, flaky, spawner]
        assert all(ref is not None for ref in refs)
        ids = [ref.id for ref in refs if ref is not None]

        async def all_done() -> bool:
            spawned = await spawned_ids(backend, spawner.id)
            return bool(spawned) and await finished(backend, *ids, *spawned)

        # A job run five minutes late would never finish within this bound.
        await until(all_done, 30, "every job, the spawned one included")
        [spawned] = await spawned_ids(backend, spawner.id)
        records = {job_id: await backend.get(job_id) for job_id in [*ids, spawned]}
    finally:
        await app.close()
    assert all(r is not None and r.state is State.SUCCEEDED for r in records.values())
    due_record, flaky_record = records[due.id], records[flaky.id]
    spawned_record = records[spawned]
    assert due_record is not None and flaky_record is not None and spawned_record is not None
    [due_start] = runs(log, due.id)
    [fail_end, retry_end] = runs(log, flaky.id, "end")
    [_, retry_start] = runs(log, flaky.id)
    [spawn_start] = runs(log, spawner.id)
    [spawn_end] = runs(log, spawner.id, "end")
    [spawned_start] = runs(log, spawned)
    print(f"\n{kind_of(url)}, workers at -{SKEW:g} s and +{SKEW:g} s: long job starts="
          f"{len(runs(log, hold.id))}; due job started {due_start.at - due_record.run_at:+.3f} s "
          f"from its run_at; retry due {flaky_record.run_at - fail_end.at:.3f} s after the "
          f"failure (backoff 2 s), started {retry_start.at - flaky_record.run_at:+.3f} s from "
          f"it; a 2 s delay from the fast worker: due {spawned_record.run_at - spawn_start.at:.3f}"
          f" s after its producer's start, started {spawned_start.at - spawned_record.run_at:+.3f}"
          f" s from it")
    # Not reaped early, though the fast worker's clock said the lease had expired.
    assert len(runs(log, hold.id)) == 1 and records[hold.id].attempt == 1  # type: ignore[union-attr]
    # Not started early by the fast worker's clock; the store stamps the start itself.
    assert due_start.at >= due_record.run_at
    assert due_record.started_at is not None and due_record.started_at >= due_record.run_at
    # The retry was due by the store's clock: after the failure plus the backoff.
    assert fail_end.at + 2.0 <= flaky_record.run_at <= retry_start.at
    assert flaky_record.attempt == 2 and retry_end.attempt == 2
    # A delay given in a skewed worker counts from the store's clock.
    assert spawn_start.at + 2.0 <= spawned_record.run_at <= spawn_end.at + 2.0
    assert spawned_start.at >= spawned_record.run_at


async def spawned_ids(backend: Backend, spawner_id: str) -> list[str]:
    """The "stamp" jobs that the "spawn" job ``spawner_id`` enqueued."""
    return [record.id for record in await backend.list_jobs(name="stamp")
            if codec.decode(record.payload).get("spawned_by") == spawner_id]


class SkewedTime:
    """The ``time`` module with a wall clock ``skew`` seconds off."""

    def __init__(self, skew: float) -> None:
        self._skew = skew

    def time(self) -> float:
        return time.time() + self._skew

    def time_ns(self) -> int:
        return time.time_ns() + round(self._skew * 1e9)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.mark.parametrize("skew", [-SKEW, SKEW])
async def test_the_runtime_takes_times_from_a_host_clock_store(host_clock_store, skew,
                                                               monkeypatch):
    # Every runtime module reads a clock `skew` seconds off; the store (its backend modules)
    # keeps the host's. The runtime must take its decisions from the store's clock.
    skewed = SkewedTime(skew)
    for name, module in list(sys.modules.items()):
        if (name.startswith("workhorse.") and not name.startswith("workhorse.backends")
                and getattr(module, "time", None) is time):
            monkeypatch.setattr(module, "time", skewed)
    app = wh.App(host_clock_store)
    stamps: dict[tuple[str, int], float] = {}

    @app.handler("stamp")
    async def stamp(job: wh.Job) -> None:
        stamps[job.id, job.attempt] = await backend.now()

    @app.handler("flaky", retries=1, backoff=wh.constant(1.0))
    async def flaky(job: wh.Job) -> None:
        stamps[job.id, job.attempt] = await backend.now()
        if job.attempt == 1:
            raise wh.JobError(wh.Status.UNAVAILABLE, "try again later")

    worker = wh.Worker(app, concurrency=4, lease=LEASE, schedules=False)
    try:
        backend = await app.backend()
        await worker.start()
        before = await backend.now()
        delayed = await app.enqueue("stamp", delay=1.0)  # from a producer with a skewed clock
        after = await backend.now()
        due = await app.enqueue("stamp", at=after + 1.0)
        retried = await app.enqueue("flaky")
        assert delayed is not None and due is not None and retried is not None
        ids = [delayed.id, due.id, retried.id]
        await until(lambda: finished(backend, *ids), 15, "the three jobs")
        records = {job_id: await backend.get(job_id) for job_id in ids}
    finally:
        await worker.stop()
        await app.close()
    delayed_record, due_record, retried_record = (records[i] for i in ids)
    assert delayed_record is not None and due_record is not None and retried_record is not None
    assert all(r is not None and r.state is State.SUCCEEDED for r in records.values())
    print(f"\n{kind_of(host_clock_store)}, runtime clock {skew:+g} s: delay 1 s -> due "
          f"{delayed_record.run_at - before:.3f} s later; retry due "
          f"{retried_record.run_at - stamps[retried.id, 1]:.3f} s after the failure")
    assert before + 1.0 <= delayed_record.run_at <= after + 1.0
    assert stamps[delayed.id, 1] >= delayed_record.run_at
    assert stamps[due.id, 1] >= due_record.run_at
    assert stamps[retried.id, 1] + 1.0 <= retried_record.run_at <= stamps[retried.id, 2]
