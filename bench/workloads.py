"""The workloads, driven from the driver process: one method per workload, one run each.

Every run starts from a flushed store, starts the worker processes it needs, calls the
library only through the producer subprocess (``bench.client``), waits for the jobs'
completion marker with a blocking ``BLPOP`` under a deadline, and stops every process it
started, whatever happens. A run that cannot finish raises ``StepFailed`` with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import redis

from bench import procs
from bench.config import (
    BENCH_KEYS,
    BENCH_REDIS_URL,
    COUNT_KEY,
    DONE_KEY,
    FIRST_KEY,
    LATENCY_KEY,
)
from bench.procs import Child
from bench.redisstats import RedisMeter, RedisUsage, calibrate_incr_cpu
from bench.systems.base import BIN, System


class StepFailed(Exception):
    """A run could not complete; the message says why."""


@dataclasses.dataclass
class Settings:
    """What the command line chose."""

    root: Path  # the repository: the working directory of every subprocess
    workdir: Path  # scratch: logs and the SQLite file
    jobs: int = 10_000
    repeats: int = 3
    latency_jobs: int = 500
    latency_interval: float = 0.01
    idle_seconds: float = 30.0
    #: Pause after a worker's warm-up job, before idle measurements start.
    settle_seconds: float = 2.0
    #: How long a worker gets to stop after SIGTERM before it is killed.
    stop_grace: float = 10.0

    @property
    def enqueue_timeout(self) -> float:
        return 60 + self.jobs * 0.01

    @property
    def process_timeout(self) -> float:
        return 60 + self.jobs * 0.05

    @property
    def latency_timeout(self) -> float:
        return 60 + 2 * self.latency_jobs * self.latency_interval


#: Called with a short text while a run waits (e.g. "4,100/10,000 jobs").
Status = Callable[[str], None]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, interpolated between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Bench:
    """Runs single workloads against a system; see the module docstring."""

    def __init__(self, settings: Settings, status: Status) -> None:
        self.settings = settings
        self.status = status
        self.redis = redis.Redis.from_url(BENCH_REDIS_URL)
        self._run_number = 0
        #: Redis CPU seconds of one INCR round trip (the bench's counter), measured once.
        self.incr_cpu = 0.0

    def calibrate(self) -> float:
        """Measure the Redis CPU cost of the jobs' counter, subtracted from processing."""
        self.redis.flushdb()
        self.incr_cpu = calibrate_incr_cpu(self.redis, COUNT_KEY)
        return self.incr_cpu

    # -- plumbing -------------------------------------------------------------------------

    def env(self, system: System) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.settings.root)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(system.worker_env())
        return env

    def _log(self, system: System, what: str) -> Path:
        self._run_number += 1
        return self.settings.workdir / "logs" / f"{self._run_number:04d}-{system.name}-{what}.log"

    def reset(self, system: System) -> None:
        """Clear the system's store and the bench database (no process of it runs)."""
        try:
            system.flush(self.redis)
        except Exception as exc:
            raise StepFailed(f"cannot clear its store: {exc}") from exc
        self.redis.flushdb()

    def client(self, system: System, op: str, limit: float, **spec: Any) -> dict[str, Any]:
        """Run one producer operation in a subprocess, killed after ``limit`` seconds; its
        JSON reply."""
        spec.update(system=system.name, workdir=str(self.settings.workdir), op=op)
        child = procs.start([sys.executable, "-m", "bench.client", json.dumps(spec)],
                            env=self.env(system), cwd=self.settings.root,
                            log=self._log(system, f"producer-{op}"), stdout=subprocess.PIPE)
        try:
            try:
                out, _ = child.popen.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                raise StepFailed(f"producer {op} timed out after {limit:.0f}s; "
                                 f"killed") from None
            if child.popen.returncode != 0:
                raise StepFailed(f"producer {op} failed: {child.tail()}")
            lines = out.decode().strip().splitlines()
            reply: dict[str, Any] = json.loads(lines[-1])
            return reply
        finally:
            procs.stop([child], grace=1.0)

    @contextlib.contextmanager
    def workers(self, system: System, processes: int, what: str) -> Iterator[list[Child]]:
        """The system's worker processes, stopped (and their trees killed) on exit."""
        children: list[Child] = []
        try:
            for command in system.worker_commands(processes):
                children.append(procs.start(command, env=self.env(system),
                                            cwd=self.settings.root,
                                            log=self._log(system, what)))
            yield children
        finally:
            procs.stop(children, grace=self.settings.stop_grace)

    def wait_done(self, workers: list[Child], target: int, timeout: float) -> tuple[
            float, Counter[str]]:
        """Block until the jobs' done marker appears: its time, and the commands issued.

        ``BLPOP`` returns as soon as the marker is pushed; its one-second bound is only so
        that a worker that died, or the deadline, is noticed. The progress shown costs one
        ``GET`` per second; both are counted and left out of the Redis figures.
        """
        issued: Counter[str] = Counter()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                done = self._count()
                raise StepFailed(f"timed out after {timeout:.0f}s with {done:,} of "
                                 f"{target:,} jobs done; killed")
            reply = cast(list[bytes] | None, self.redis.blpop([DONE_KEY], timeout=1))
            issued["blpop"] += 1
            if reply is not None:
                return float(reply[1]), issued
            for child in workers:
                if child.popen.poll() is not None:
                    raise StepFailed(f"worker exited with code {child.popen.returncode}: "
                                     f"{child.tail()}")
            issued["get"] += 1
            self.status(f"{self._count():,}/{target:,} jobs")

    def _number(self, key: str) -> float:
        """A number the jobs stored in ``key``; 0 if none yet. (redis-py types the replies
        of its sync and async clients as one union, hence the casts.)"""
        return float(cast(bytes | None, self.redis.get(key)) or 0)

    def _count(self) -> int:
        return int(self._number(COUNT_KEY))

    def warm_up(self, system: System, workers: list[Child]) -> None:
        """Run one job through freshly started workers, so they are up and connected."""
        self.client(system, "enqueue", self.settings.enqueue_timeout, mode="one", count=1,
                    target=1)
        self.wait_done(workers, 1, 60.0)
        self.redis.delete(*BENCH_KEYS)

    def redis_cost(self, usage: RedisUsage, jobs: int, bench_calls: Counter[str],
                   counted: int) -> dict[str, Any]:
        """Redis usage per 1,000 jobs, without the bench's own commands and their CPU."""
        own = Counter(bench_calls)
        # redis-py sends INCR as INCRBY.
        own.update({"incrby": counted, "set": 1, "rpush": 1})
        return usage.minus(own, counted * self.incr_cpu).per_1000(jobs)

    # -- workloads -----------------------------------------------------------------------

    def enqueue(self, system: System, mode: str) -> dict[str, Any]:
        """Enqueue ``jobs`` no-op jobs one by one (``"one"``) or in bulk; no worker runs."""
        jobs = self.settings.jobs
        self.reset(system)
        reply = self.client(system, "enqueue", self.settings.enqueue_timeout, mode=mode,
                            count=jobs, target=jobs, meter=system.redis_based)
        self.reset(system)
        run: dict[str, Any] = {"seconds": reply["seconds"], "rate": jobs / reply["seconds"]}
        if reply.get("redis"):
            run["redis"] = RedisUsage.from_dict(reply["redis"]).per_1000(jobs)
        return run

    def throughput(self, system: System, processes: int) -> dict[str, Any]:
        """Process ``jobs`` pre-enqueued no-op jobs with ``processes`` worker processes.

        The rate is measured from the first job's start to the last job's end, so worker
        start-up is not in it; ``wall_seconds`` (from starting the workers) is kept too.
        """
        if system.in_process:
            return self._throughput_inproc(system)
        jobs = self.settings.jobs
        self.reset(system)
        self.client(system, "enqueue", self.settings.enqueue_timeout,
                    mode="bulk" if system.bulk_api else "one", count=jobs, target=jobs)
        meter = RedisMeter(self.redis) if system.redis_based else None
        if meter:
            meter.start()
        started = time.time()
        with self.workers(system, processes, f"throughput{processes}") as workers:
            done_at, issued = self.wait_done(workers, jobs, self.settings.process_timeout)
            usage = meter.stop() if meter else None
            counted = self._count()
            first = self._number(FIRST_KEY) or started
        self.reset(system)
        run: dict[str, Any] = {"seconds": done_at - first, "rate": jobs / (done_at - first),
                               "wall_seconds": done_at - started, "runs_counted": counted}
        if usage is not None:
            run["redis"] = self.redis_cost(usage, jobs, issued, counted)
        return run

    def _throughput_inproc(self, system: System) -> dict[str, Any]:
        jobs = self.settings.jobs
        reply = self.client(system, "throughput", self.settings.process_timeout + 30,
                            count=jobs, timeout=self.settings.process_timeout)
        seconds = reply["done"] - reply["first"]
        return {"seconds": seconds, "rate": jobs / seconds, "runs_counted": reply["count"]}

    def latency(self, system: System) -> dict[str, Any]:
        """Pickup latency of jobs enqueued one every ``latency_interval`` to an idle worker."""
        count, interval = self.settings.latency_jobs, self.settings.latency_interval
        timeout = self.settings.latency_timeout
        if system.in_process:
            reply = self.client(system, "latency-inproc", timeout + 30, count=count,
                                interval=interval, timeout=timeout)
            return summarize_latency(reply["latencies"])
        self.reset(system)
        with self.workers(system, 1, "latency") as workers:
            self.warm_up(system, workers)
            self.client(system, "latency", timeout, count=count, interval=interval)
            self.wait_done(workers, count, 60.0)
            latencies = [float(x) for x in cast(list[bytes],
                                                 self.redis.lrange(LATENCY_KEY, 0, -1))]
        self.reset(system)
        return summarize_latency(latencies)

    def idle(self, system: System) -> dict[str, Any]:
        """CPU and memory of one idle worker process (and its children), after a warm-up."""
        seconds = self.settings.idle_seconds
        if system.in_process:
            return self._idle_inproc(system)
        self.reset(system)
        # Metered for every system: for one that does not use Redis, what is counted is
        # the rest of the machine's traffic to the server, kept as a measure of the noise.
        meter = RedisMeter(self.redis)
        with self.workers(system, 1, "idle") as workers:
            self.warm_up(system, workers)
            time.sleep(self.settings.settle_seconds)
            meter.start()
            self.status(f"measuring for {seconds:.0f}s")
            usage = procs.measure_tree(workers[0].pid, seconds)
            redis_usage = meter.stop()
            for child in workers:
                if child.popen.poll() is not None:
                    raise StepFailed(f"worker exited with code {child.popen.returncode}: "
                                     f"{child.tail()}")
        self.reset(system)
        run: dict[str, Any] = dataclasses.asdict(usage)
        per_s = sum(redis_usage.calls.values()) / seconds
        run["redis_commands_per_s" if system.redis_based else "redis_background_per_s"] = per_s
        return run

    def _idle_inproc(self, system: System) -> dict[str, Any]:
        spec = {"system": system.name, "workdir": str(self.settings.workdir), "op": "idle",
                "timeout": 60.0}
        child = procs.start([sys.executable, "-m", "bench.client", json.dumps(spec)],
                            env=self.env(system), cwd=self.settings.root,
                            log=self._log(system, "idle"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
        try:
            assert child.popen.stdout is not None and child.popen.stdin is not None
            ready, _, _ = select.select([child.popen.stdout], [], [], 60.0)
            if not ready or b"ready" not in child.popen.stdout.readline():
                raise StepFailed(f"in-process worker did not start: {child.tail()}")
            time.sleep(self.settings.settle_seconds)
            self.status(f"measuring for {self.settings.idle_seconds:.0f}s")
            meter = RedisMeter(self.redis)
            meter.start()
            usage = procs.measure_tree(child.pid, self.settings.idle_seconds)
            background = sum(meter.stop().calls.values()) / self.settings.idle_seconds
            child.popen.stdin.close()
            child.popen.wait(timeout=30.0)
        finally:
            procs.stop([child], grace=self.settings.stop_grace)
        return {**dataclasses.asdict(usage), "redis_background_per_s": background}


def summarize_latency(latencies: list[float]) -> dict[str, Any]:
    """p50, p99 and max of latencies in seconds, as milliseconds."""
    if not latencies:
        raise StepFailed("no latency was recorded")
    ms = [x * 1000 for x in latencies]
    return {"p50_ms": percentile(ms, 0.50), "p99_ms": percentile(ms, 0.99), "max_ms": max(ms),
            "mean_ms": statistics.fmean(ms), "jobs": len(ms)}
