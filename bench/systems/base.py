"""The interface every benchmarked system implements (one module per system beside this).

A system is measured through two sides:

- the **driver side**, in the driver process: the worker command line for N processes, and
  how to clear the system's state between runs;
- the **producer side**, in a short-lived producer subprocess (``bench.client``): connect,
  enqueue no-op jobs one by one or with the library's bulk call, and enqueue latency jobs.

The task functions themselves live in the system's module, which the workers import; they
count themselves through ``bench.counter`` so the driver never polls a queue.
"""

from __future__ import annotations

import contextlib
import sys
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from bench.counter import LocalCounter

#: The virtualenv's bin directory, where each library's worker command is installed.
BIN = Path(sys.executable).parent


class System(ABC):
    """One job system under test. Subclasses set the class attributes and the verbs."""

    #: Short name used on the command line and in the tables, e.g. "rq".
    name: str
    #: The PyPI distribution whose version is reported.
    distribution: str
    #: True if it keeps its jobs in Redis: its Redis commands and CPU are measured.
    redis_based: bool = True
    #: True if producer and worker must share one process (``memory://``).
    in_process: bool = False
    #: The call used to enqueue one job, as it appears in the tables.
    one_api: str
    #: The bulk enqueue call, or None when the library has none ("n/a" in the tables).
    bulk_api: str | None = None
    #: What one worker process runs at once, with the library's default settings.
    concurrency: str
    #: How "N processes" is obtained for this library.
    processes_how: str = "N worker commands started side by side"
    #: Anything a reader must know to read its numbers.
    notes: tuple[str, ...] = ()

    # -- driver side --------------------------------------------------------------------------

    @abstractmethod
    def worker_commands(self, processes: int) -> list[list[str]]:
        """The command lines that run ``processes`` worker processes in total."""

    def worker_env(self) -> dict[str, str]:
        """Extra environment for workers and producers."""
        return {}

    def flush(self, bench_redis: redis.Redis) -> None:  # noqa: B027 - optional hook
        """Remove every job and key the system left; the bench database is flushed apart.

        Only called while none of its processes run. By default the system keeps everything
        in the bench database, which the driver flushes anyway.
        """

    # -- producer side (in the producer subprocess) -------------------------------------------

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, so that connecting is not part of what is timed."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Close connections opened by ``open`` or the enqueues."""

    @abstractmethod
    async def enqueue_noop(self, target: int) -> None:
        """Enqueue one no-op job; the run is done when ``target`` of them have run."""

    async def enqueue_noop_bulk(self, count: int, target: int) -> None:
        """Enqueue ``count`` no-op jobs with the library's bulk call."""
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    @abstractmethod
    async def enqueue_latency(self, target: int) -> None:
        """Enqueue one latency job carrying ``time.time()`` as its enqueue time."""

    def local_counter(self) -> LocalCounter:
        """The in-process counter its jobs use (``in_process`` systems)."""
        raise NotImplementedError(f"{self.name} counts its jobs in the driver's tally")

    @contextlib.asynccontextmanager
    async def in_process_worker(self) -> AsyncIterator[None]:
        """Run a worker in this process while the block runs (``in_process`` systems)."""
        raise NotImplementedError(f"{self.name} runs its workers in their own processes")
        yield  # pragma: no cover - makes this an async generator


def repeat(command: list[str], processes: int) -> list[list[str]]:
    """``processes`` copies of one single-process worker command."""
    return [list(command) for _ in range(processes)]
