"""How benchmark jobs count themselves, so the driver sees completion without polling.

Every job, whatever the library, ends by sending one fixed-size record (``RECORD``: its
start time, its end time, and its pickup latency or NaN) over a Unix socket to the driver's
``Tally``: one ``sendall`` of 24 bytes, no reply, on a connection its process opened once.
The driver's tally thread counts the records and signals when the target is reached. Jobs no
longer count in Redis: an ``INCR`` round trip through redis-py cost an asyncio worker about
45 µs of CPU per job (more than workhorse's own per-job work) and added a Redis command per
job to every system's Redis figures. In-process (``memory://``) jobs count in memory and set
an ``asyncio.Event`` instead.

The jobs' ``target`` argument is kept for every counter, so that every system's jobs carry
the same arguments; only ``LocalCounter`` reads it (the driver's tally knows the target).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from types import TracebackType
from typing import Any

from bench.config import ENV_TALLY

#: One job's record: started and ended (epoch seconds), and its pickup latency in seconds
#: (``started - enqueued_at``) or NaN for a no-op job.
RECORD = struct.Struct("<ddd")


class _Connection:
    """One connection to the driver's tally per process, shared by the process's threads.

    Opened on first use and again in a forked child (rq forks a work horse per job, Celery
    forks its pool children; a child must not write on its parent's connection).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = 0
        # A fork while another thread held the lock would leave it held in the child.
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def send(self, started: float, ended: float, latency: float) -> None:
        record = RECORD.pack(started, ended, latency)
        with self._lock:
            if self._sock is None or self._pid != os.getpid():
                if self._sock is not None:
                    self._sock.close()  # the parent's: closes only this process's copy
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(os.environ[ENV_TALLY])
                self._pid = os.getpid()
            # A blocking send of 24 bytes into a local socket buffer that the driver drains
            # (it holds thousands of records): it does not wait in practice.
            self._sock.sendall(record)


class SyncCounter:
    """The counter for jobs run in threads or processes (rq, celery, dramatiq, huey)."""

    def __init__(self) -> None:
        self._connection = _Connection()

    def noop(self, target: int, started: float) -> None:
        """Count a no-op job that started at ``started`` (epoch seconds)."""
        self._connection.send(started, time.time(), math.nan)

    def latency(self, target: int, enqueued_at: float, started: float) -> None:
        """Record a latency job's pickup latency (``started - enqueued_at``) and count it."""
        self._connection.send(started, time.time(), started - enqueued_at)


class AsyncCounter:
    """The counter for asyncio workers (workhorse, arq, saq, taskiq, procrastinate).

    It sends with the same blocking ``sendall`` as ``SyncCounter``, from the event loop:
    24 bytes into a local socket buffer never waits in practice, and costs less than
    handing the write to the loop.
    """

    def __init__(self) -> None:
        self._connection = _Connection()

    async def noop(self, target: int, started: float) -> None:
        """Count a no-op job that started at ``started`` (epoch seconds)."""
        self._connection.send(started, time.time(), math.nan)

    async def latency(self, target: int, enqueued_at: float, started: float) -> None:
        """Record a latency job's pickup latency (``started - enqueued_at``) and count it."""
        self._connection.send(started, time.time(), started - enqueued_at)


class LocalCounter:
    """The in-process counter (``memory://``): the same bookkeeping, and an Event."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every count (between a warm-up job and the measured ones)."""
        self.count = 0
        self.first: float | None = None
        self.done_at: float | None = None
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    async def noop(self, target: int, started: float) -> None:
        """Count a no-op job that started at ``started`` (epoch seconds)."""
        self._settle(target, started)

    async def latency(self, target: int, enqueued_at: float, started: float) -> None:
        """Record a latency job's pickup latency and count it."""
        self.latencies.append(started - enqueued_at)
        self._settle(target, started)

    def _settle(self, target: int, started: float) -> None:
        self.count += 1
        if self.count == 1:
            self.first = started
        if self.count == target:
            self.done_at = time.time()
            self.done.set()

    def summary(self) -> dict[str, Any]:
        """What the driver's tally would have counted."""
        return {"count": self.count, "first": self.first, "done": self.done_at,
                "latencies": list(self.latencies)}


class Tally:
    """The driver's end: a listening Unix socket in a temporary directory, and a thread
    that accepts the jobs' connections and counts their records.

    Use it as a context manager around one run; pass ``path`` to the workers in
    ``$BENCH_TALLY``; ``expect(n)`` before the jobs run, then ``wait``.
    """

    #: After reading what was there, the thread waits this long before reading again while
    #: jobs are still due, so that it wakes about 50 times a second rather than once per
    #: job (it shares the machine's cores with the workers). This delays only when the
    #: driver sees completion, not the figures: the times are the ones the jobs recorded.
    BATCH_SECONDS = 0.02
    #: Bytes read per ``recv``.
    CHUNK = 1 << 16

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="whbench-tally-")
        #: The socket's path, for ``$BENCH_TALLY``.
        self.path = os.path.join(self._dir, "tally.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._wake_read, self._wake_write = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self.expect(0)
        self._thread = threading.Thread(target=self._run, name="bench-tally", daemon=True)
        self._thread.start()

    # -- the driver's side -----------------------------------------------------------------

    def expect(self, target: int) -> None:
        """Forget what was counted; ``wait`` returns once ``target`` records arrive."""
        with self._lock:
            self._target = target
            self._count = 0
            self._first = math.inf
            self._last = -math.inf
            self._latencies: list[float] = []
            self._done.clear()

    def wait(self, timeout: float) -> bool:
        """Whether the target was reached within ``timeout`` seconds."""
        return self._done.wait(timeout)

    @property
    def count(self) -> int:
        """Records counted since ``expect``."""
        return self._count

    def first_started(self) -> float:
        """The earliest start recorded since ``expect``."""
        return self._first

    def last_ended(self) -> float:
        """The latest end recorded since ``expect``."""
        return self._last

    def latencies(self) -> list[float]:
        """The pickup latencies recorded since ``expect``, in seconds."""
        with self._lock:
            return list(self._latencies)

    def close(self) -> None:
        """Stop the thread, close every connection and remove the socket."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")
        self._thread.join(timeout=10.0)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        self._wake_write.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Tally:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            read = False
            for key, _ in self._selector.select():
                if key.fileobj is self._wake_read:
                    return
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    read = self._drain(key) or read
            if read and not self._done.is_set():
                self._stop.wait(self.BATCH_SECONDS)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            # What a connection sent but that does not make a whole record yet.
            self._selector.register(conn, selectors.EVENT_READ, bytearray())

    def _drain(self, key: selectors.SelectorKey) -> bool:
        """Read everything a connection holds and count its whole records."""
        conn: socket.socket = key.fileobj  # type: ignore[assignment]
        pending: bytearray = key.data
        closed = False
        read = False
        while True:
            try:
                chunk = conn.recv(self.CHUNK)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                closed = True
                break
            pending += chunk
            read = True
        whole = len(pending) - len(pending) % RECORD.size
        if whole:
            self._count_records(RECORD.iter_unpack(pending[:whole]))
            del pending[:whole]
        if closed:
            # A job process that exited; a torn record (it was killed mid-send) is dropped.
            self._selector.unregister(conn)
            conn.close()
        return read

    def _count_records(self, records: Any) -> None:
        with self._lock:
            for started, ended, latency in records:
                self._count += 1
                self._first = min(self._first, started)
                self._last = max(self._last, ended)
                if not math.isnan(latency):
                    self._latencies.append(latency)
            if self._target and self._count >= self._target:
                self._done.set()
