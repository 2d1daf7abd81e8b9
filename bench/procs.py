"""Subprocesses the driver starts, and how it stops them without leaving any behind.

Each one runs in a session (and process group) of its own, so the whole tree a worker
command starts (Celery's prefork children, rq's work horses, dramatiq's and taskiq's worker
processes) can be killed at once. Stopping sends SIGTERM to the command, which shuts
down as it documents, then SIGKILL to its group after a bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

import psutil

#: Every child still running, so that a failure or Ctrl-C can stop them all.
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
#: The pids among them that serve the whole run (a private Redis), not one system's turn.
_SERVERS: set[int] = set()


@dataclasses.dataclass
class Child:
    """A started subprocess and the file its output goes to."""

    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, width: int = 300) -> str:
        """What it last printed, to explain a failure: a traceback's final line (the
        exception), else its last two lines."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        kept = lines[-1:] if "Traceback (most recent call last)" in text else lines[-2:]
        return " | ".join(kept)[-width:] or "(no output)"


def start(command: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path,
          stdin: int | IO[bytes] | None = subprocess.DEVNULL,
          stdout: int | None = None, server: bool = False) -> Child:
    """Start ``command`` in its own session; stderr (and stdout unless piped) go to ``log``.

    A ``server`` serves the whole run: only ``kill_all(servers=True)`` stops it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdin=stdin,
            stdout=sink if stdout is None else stdout, stderr=sink,
            start_new_session=True)
    _LIVE[popen.pid] = popen
    if server:
        _SERVERS.add(popen.pid)
    return Child(popen, log)


def _signal_group(pid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group led by ``pid``; False if the group is empty."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # only zombies left
        return False
    return True


def stop(children: Iterable[Child], grace: float = 10.0) -> None:
    """SIGTERM each command, wait up to ``grace`` seconds, then SIGKILL whatever remains of
    their process groups; returns once every child has been reaped."""
    children = list(children)
    for child in children:
        if child.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        # The leader may be gone while its children (work horses, pool processes) live on.
        _signal_group(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=5.0)
        _LIVE.pop(child.pid, None)


def kill_all(servers: bool = True) -> None:
    """SIGKILL every child still running and its group (on Ctrl-C or a fatal error);
    with ``servers=False``, those that serve the whole run are spared."""
    for pid, popen in list(_LIVE.items()):
        if pid in _SERVERS and not servers:
            continue
        _signal_group(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5.0)
        _LIVE.pop(pid, None)
        _SERVERS.discard(pid)


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants alive now."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclasses.dataclass
class TreeUsage:
    """CPU and memory of a process tree over a window."""

    cpu_percent: float  # of one core
    rss_mb: float  # summed over the tree, median of the samples
    processes: int


def measure_tree(pid: int, seconds: float, interval: float = 1.0) -> TreeUsage:
    """Sample the tree under ``pid`` for ``seconds``: CPU time used, RSS every ``interval``."""

    def cpu_by_pid() -> dict[int, float]:
        times: dict[int, float] = {}
        for process in tree(pid):
            with contextlib.suppress(psutil.Error):
                cpu = process.cpu_times()
                times[process.pid] = cpu.user + cpu.system
        return times

    def rss() -> tuple[float, int]:
        total, count = 0, 0
        for process in tree(pid):
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
                count += 1
        return total / 2**20, count

    before, started = cpu_by_pid(), time.monotonic()
    samples: list[float] = []
    processes = 0
    end = started + seconds
    while (now := time.monotonic()) < end:
        time.sleep(min(interval, end - now))
        mb, processes = rss()
        samples.append(mb)
    after, elapsed = cpu_by_pid(), time.monotonic() - started
    used = sum(cpu - before.get(p, 0.0) for p, cpu in after.items())
    samples.sort()
    return TreeUsage(cpu_percent=100 * used / elapsed,
                     rss_mb=samples[len(samples) // 2] if samples else 0.0,
                     processes=processes)


def start_private_redis(workdir: Path, timeout: float = 10.0) -> int:
    """Start a throwaway ``redis-server`` (no persistence) on a free loopback port; its port.

    It is stopped with every other child (``kill_all``) when the driver exits.
    """
    import shutil
    import socket

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--private-redis needs redis-server on PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    start([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
           "--appendonly", "no", "--dir", str(workdir)],
          env=dict(os.environ), cwd=workdir, log=workdir / "redis-server.log", server=True)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return port
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
