"""Start processes for the source tests, and kill a consumer holding messages."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from tests.faults.procs import stop, wait_for
from tests.sources.conftest import WAIT

HERE = Path(__file__).resolve().parent


def start_script(script: Path, *args: str, output: Path) -> subprocess.Popen[bytes]:
    """``python SCRIPT ARGS`` in a new process, its stdout and stderr appended to ``output``."""
    with open(output, "ab") as out:
        return subprocess.Popen([sys.executable, str(script), *args], stdout=out, stderr=out)


def start_consumer(kind: str, url: str, name: str, log: Path,
                   subject: str | None = None) -> subprocess.Popen[bytes]:
    """``consumer_proc.py`` in a new process; its output goes beside ``log``."""
    extra = [] if subject is None else [subject]
    return start_script(HERE / "consumer_proc.py", kind, url, name, str(log), *extra,
                        output=log.with_suffix(".stderr"))


def started(log: Path) -> list[tuple[str, int]]:
    """The (message key, deliveries) the process has started, from its log."""
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines()]
    return [(parts[0], int(parts[1])) for parts in lines if len(parts) == 2]


async def kill_a_consumer_holding(count: int, kind: str, url: str, name: str, log: Path,
                                  subject: str | None = None) -> set[str]:
    """Start ``consumer_proc.py``, SIGKILL it once it has started ``count`` messages (its
    concurrency) and hangs on them; the keys of the messages it took."""
    proc = start_consumer(kind, url, name, log, subject)
    try:
        await asyncio.to_thread(wait_for, lambda: len(started(log)) == count, WAIT,
                                f"the doomed consumer to start {count} messages")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        stop(proc)
    return {key for key, _ in started(log)}
