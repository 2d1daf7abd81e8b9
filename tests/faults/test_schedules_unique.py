"""Once means once: an interval schedule run by ten worker processes (one of them killed)
enqueues each tick exactly once, and 100 concurrent enqueues of one unique job leave one
live job, on every backend."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import workhorse as wh

from .procs import read_log, start_worker, wait_for
from .servers import PostgresServer, RedisServer

pytestmark = pytest.mark.slow

#: The schedule's interval and how many of its ticks the test watches.
TICK = 0.1
TICKS = 200


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    # A server of our own: ten workers, or a hundred racing producers, open more
    # connections than a shared server may have to spare.
    server = PostgresServer(max_connections=300)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def tick_of(run_at: float) -> int:
    """The index of a tick: ticks fall on multiples of TICK since the epoch."""
    return round(run_at / TICK)


def ticks_run(log: Path) -> dict[int, set[str]]:
    """Tick index -> the ids of the jobs that ran it, from the attempt log."""
    ran: dict[int, set[str]] = {}
    for entry in read_log(log):
        if entry.kind == "tick":
            ran.setdefault(tick_of(entry.at), set()).add(entry.job_id)
    return ran


async def stored_ticks(url: str) -> tuple[Counter[int], Counter[wh.State]]:
    """Per tick index, how many jobs the store holds for it; and their states."""
    app = wh.App(url)
    try:
        jobs = await (await app.backend()).list_jobs(name="tick", limit=100_000)
        return Counter(tick_of(j.run_at) for j in jobs), Counter(j.state for j in jobs)
    finally:
        await app.close()


def test_ten_workers_one_killed_enqueue_every_tick_exactly_once(postgres, tmp_path):
    url, log = postgres.url + "?schema=ticks", tmp_path / "attempts.log"
    env = {"TICK_EVERY": str(TICK), "TICK_HOLD": "1.0"}  # ten ticks run at any time
    workers = [start_worker(url, log, "-c", "4", "--lease", "2", extra_env=env,
                            app="app_stores:app") for _ in range(10)]
    try:
        wait_for(lambda: len(ticks_run(log)) >= TICKS // 2, 60, f"{TICKS // 2} ticks")
        # Kill the worker that started the latest tick: it is still holding that one.
        latest = max((e for e in read_log(log) if e.kind == "tick"), key=lambda e: e.at)
        victim = next(w for w in workers if w.pid == latest.pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at_tick = tick_of(latest.at)
        first = min(ticks_run(log))
        wanted = set(range(first, first + TICKS))
        # A tick the victim held runs again once its 2 s lease expires.
        wait_for(lambda: wanted <= set(ticks_run(log)), 90,
                 f"ticks {first}..{first + TICKS - 1} to have run")
        alive = [w.poll() is None for w in workers if w is not victim]
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(timeout=30)
    ran = ticks_run(log)
    per_tick, by_state = asyncio.run(stored_ticks(url))
    stored = sorted(per_tick)
    gaps = sorted(set(range(stored[0], stored[-1] + 1)) - set(stored))
    twice = {t: n for t, n in per_tick.items() if n > 1}
    rerun = {tick_of(e.at) for e in read_log(log) if e.kind == "tick" and e.attempt > 1}
    print(f"\nten workers, every={TICK}s: {len(stored)} ticks stored ({dict(by_state)}), "
          f"{len(ran)} run, killed pid {victim.pid} at tick {killed_at_tick - first}; "
          f"enqueued twice: {len(twice)}, missing: {len(gaps)}, ticks run again after the "
          f"kill: {sorted(t - first for t in rerun)}")
    assert all(alive)
    assert twice == {}
    assert gaps == []
    assert len(stored) >= TICKS
    # Every tick ran as one job: the ticks the victim held ran again as the same job.
    assert {t: len(ids) for t, ids in ran.items() if len(ids) > 1} == {}
    assert killed_at_tick in rerun
    assert all(w.returncode == 0 for w in workers if w is not victim)


# -- uniqueness ----------------------------------------------------------------------------

def enqueue_together(apps: list[wh.App], each: int) -> list[str | BaseException | None]:
    """From one thread per App, all released at once, ``each`` concurrent enqueues of the
    same unique job; every outcome (a job id, None for a duplicate, or the error)."""
    barrier = threading.Barrier(len(apps))
    outcomes: list[str | BaseException | None] = []
    lock = threading.Lock()

    async def race(app: wh.App) -> None:
        await app.backend()  # connected first: the enqueues race, not the connects
        barrier.wait(timeout=60)
        refs = await asyncio.gather(*(app.enqueue("work", {"order": 42}, unique=True)
                                      for _ in range(each)), return_exceptions=True)
        with lock:
            outcomes.extend(r if isinstance(r, BaseException) or r is None else r.id
                            for r in refs)

    threads = [threading.Thread(target=asyncio.run, args=(race(app),)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


async def live_jobs(app: wh.App) -> list[wh.backends.base.JobRecord]:
    jobs = await (await app.backend()).list_jobs(name="work", limit=1000)
    return [j for j in jobs if j.state.live]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "postgresql"])
def test_100_concurrent_enqueues_of_one_unique_job_leave_one_live_job(request, kind, tmp_path):
    url: str = {
        "memory": lambda: "memory://",
        "sqlite": lambda: "sqlite:///" + str(tmp_path / "unique.db"),
        "redis": lambda: request.getfixturevalue("redis_server").url,
        "postgresql": lambda: request.getfixturevalue("postgres").url + "?schema=unique",
    }[kind]()
    first = wh.App(url)
    asyncio.run(first.backend())  # the schema exists before the race
    # The memory store lives in one App: its hundred callers are threads sharing it. The
    # others get twenty Apps (each with its own connections), five enqueues at once each.
    apps = [first] * 100 if kind == "memory" else [first, *(wh.App(url) for _ in range(19))]
    each = 1 if kind == "memory" else 5
    try:
        outcomes = enqueue_together(apps, each)
        live = asyncio.run(live_jobs(first))
    finally:
        for app in set(apps):
            asyncio.run(app.close())
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    created = [o for o in outcomes if isinstance(o, str)]
    print(f"\n{kind}: {len(outcomes)} concurrent unique enqueues: {len(created)} created, "
          f"{outcomes.count(None)} duplicates, {len(errors)} errors {errors[:3]}")
    assert len(outcomes) == 100
    assert errors == []
    assert len(created) == 1
    assert [j.id for j in live] == created

