"""The workloads, driven from the driver process: one method per workload, one run each.

Every run starts from a flushed store, starts the worker processes it needs, calls the
library only through the producer subprocess (``bench.client``), waits under a deadline
until the jobs' records reach the driver's tally (``bench.counter.Tally``), and stops every
process it started, whatever happens. A run that cannot finish raises ``StepFailed`` with
the reason.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from bench import procs
from bench.config import BENCH_REDIS_URL, ENV_TALLY
from bench.counter import Tally
from bench.procs import Child
from bench.redisstats import RedisMeter, RedisUsage
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

    # -- plumbing -------------------------------------------------------------------------

    def env(self, system: System, tally: Tally | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.settings.root)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(system.worker_env())
        if tally is not None:
            env[ENV_TALLY] = tally.path
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
    def workers(self, system: System, processes: int, what: str,
                tally: Tally) -> Iterator[list[Child]]:
        """The system's worker processes, reporting to ``tally``; stopped (and their trees
        killed) on exit."""
        children: list[Child] = []
        try:
            for command in system.worker_commands(processes):
                children.append(procs.start(command, env=self.env(system, tally),
                                            cwd=self.settings.root,
                                            log=self._log(system, what)))
            yield children
        finally:
            procs.stop(children, grace=self.settings.stop_grace)

    def wait_done(self, tally: Tally, workers: list[Child], target: int,
                  timeout: float) -> None:
        """Block until ``target`` jobs have reported to ``tally`` (``tally.expect`` was
        called before they could run).

        The wait returns as soon as the tally's thread counts the last record; its
        one-second bound is only so that a worker that died, or the deadline, is noticed,
        and the progress shown. Nothing is sent to Redis meanwhile.
        """
        deadline = time.monotonic() + timeout
        while not tally.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise StepFailed(f"timed out after {timeout:.0f}s with {tally.count:,} of "
                                 f"{target:,} jobs done; killed")
            for child in workers:
                if child.popen.poll() is not None:
                    raise StepFailed(f"worker exited with code {child.popen.returncode}: "
                                     f"{child.tail()}")
            self.status(f"{tally.count:,}/{target:,} jobs")

    def warm_up(self, system: System, workers: list[Child], tally: Tally) -> None:
        """Run one job through freshly started workers, so they are up and connected."""
        tally.expect(1)
        self.client(system, "enqueue", self.settings.enqueue_timeout, mode="one", count=1,
                    target=1)
        self.wait_done(tally, workers, 1, 60.0)

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
        with Tally() as tally:
            tally.expect(jobs)
            if meter:
                meter.start()
            started = time.time()
            with self.workers(system, processes, f"throughput{processes}", tally) as workers:
                self.wait_done(tally, workers, jobs, self.settings.process_timeout)
                # The window holds only the system's commands (and the meter's own, which
                # it leaves out): the jobs report to the tally, not to Redis.
                usage = meter.stop() if meter else None
                counted = tally.count
                first, last = tally.first_started(), tally.last_ended()
        self.reset(system)
        run: dict[str, Any] = {"seconds": last - first, "rate": jobs / (last - first),
                               "wall_seconds": last - started, "runs_counted": counted}
        if usage is not None:
            run["redis"] = usage.per_1000(jobs)
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
        with Tally() as tally, self.workers(system, 1, "latency", tally) as workers:
            self.warm_up(system, workers, tally)
            tally.expect(count)
            self.client(system, "latency", timeout, count=count, interval=interval)
            self.wait_done(tally, workers, count, 60.0)
            latencies = tally.latencies()
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
        with Tally() as tally, self.workers(system, 1, "idle", tally) as workers:
            self.warm_up(system, workers, tally)
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
