"""Worker processes and the attempt log for the fault tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import workhorse as wh
from workhorse.backends.base import State

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Entry:
    kind: str
    job_id: str
    attempt: int
    pid: int
    at: float


def start_worker(url: str, log: Path, *args: str,
                 extra_env: dict[str, str] | None = None,
                 app: str = "faultapp:app") -> subprocess.Popen[bytes]:
    """``workhorse worker APP`` (a module of this folder, or of a folder put on
    ``PYTHONPATH`` by ``extra_env``) in a new process, on ``url``."""
    extra_env = extra_env or {}
    path = [str(HERE), extra_env.get("PYTHONPATH", ""), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, **extra_env, "WORKHORSE_URL": url, "ATTEMPT_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    # The worker's log goes to a file beside the attempt log, for a person reading a failure.
    with open(log.with_suffix(".workers.log"), "ab") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "workhorse", "worker", app, "--log-level",
             "WARNING", *args], env=env, stdout=subprocess.DEVNULL, stderr=errors)


def read_log(log: Path) -> list[Entry]:
    """Every complete line of the attempt log."""
    if not log.exists():
        return []
    entries = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:
            entries.append(Entry(parts[0], parts[1], int(parts[2]), int(parts[3]),
                                 float(parts[4])))
    return entries


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (bounded) from a test that watches other processes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker process for good (used in cleanup)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


async def states(url: str) -> Counter[State]:
    """Jobs of the store at ``url`` counted by state."""
    app = wh.App(url)
    try:
        counts: Counter[State] = Counter()
        for stats in await (await app.backend()).queue_stats():
            counts.update({state: n for state, n in stats.counts.items() if n})
        return counts
    finally:
        await app.close()


def count_state(url: str, state: State) -> int:
    """How many jobs of the store at ``url`` are in ``state`` (from sync test code)."""
    return asyncio.run(states(url))[state]


async def enqueue_work(url: str, count: int, seconds: float) -> list[str]:
    """Enqueue ``count`` "work" jobs that sleep ``seconds``; their ids."""
    app = wh.App(url)
    try:
        refs = await app.enqueue_many(
            [wh.Job("work", args={"seconds": seconds}) for _ in range(count)])
        return [ref.id for ref in refs if ref is not None]
    finally:
        await app.close()


#: Shifts this process's wall clock by $WORKHORSE_TEST_CLOCK_SKEW seconds at start-up; only
#: the worker started by ``start_skewed_worker`` has it on its path.
_SKEW_SITECUSTOMIZE = '''\
import os
import time

_skew = float(os.environ["WORKHORSE_TEST_CLOCK_SKEW"])
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + _skew
time.time_ns = lambda: _time_ns() + round(_skew * 1e9)
'''


def start_skewed_worker(url: str, log: Path, skew: float, *args: str,
                        app: str = "faultapp:app") -> subprocess.Popen[bytes]:
    """``start_worker``, in a process whose ``time.time()`` and ``time.time_ns()`` run
    ``skew`` seconds off (a sitecustomize.py on that process's PYTHONPATH only)."""
    site = log.parent / f"clock-skew{skew:+g}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SKEW_SITECUSTOMIZE)
    env = {**os.environ, "WORKHORSE_URL": url, "ATTEMPT_LOG": str(log),
           "WORKHORSE_TEST_CLOCK_SKEW": repr(skew),
           "PYTHONPATH": os.pathsep.join([str(site), str(HERE),
                                          os.environ.get("PYTHONPATH", "")])}
    with open(log.with_suffix(".workers.log"), "ab") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "workhorse", "worker", app, "--log-level",
             "WARNING", *args], env=env, stdout=subprocess.DEVNULL, stderr=errors)
