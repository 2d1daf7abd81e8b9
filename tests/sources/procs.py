"""Start and kill the consumer process of the SIGKILL tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start_consumer(kind: str, url: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    """``consumer_proc.py`` in a new process; its stderr goes beside ``log``."""
    with open(log.with_suffix(".stderr"), "ab") as errors:
        return subprocess.Popen(
            [sys.executable, str(HERE / "consumer_proc.py"), kind, url, name, str(log)],
            stdout=subprocess.DEVNULL, stderr=errors)


def started(log: Path) -> list[tuple[str, int]]:
    """The (message key, deliveries) the process has started, from its log."""
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines()]
    return [(parts[0], int(parts[1])) for parts in lines if len(parts) == 2]
