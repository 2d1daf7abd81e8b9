"""Subprocesses for the dashboard tests: ``workhorse ui`` and ``workhorse worker``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.web.webapp:app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``check`` (an HTTP error counts as not yet) until it holds, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def workhorse(url: str, *args: str) -> subprocess.Popen[bytes]:
    """``workhorse ARGS`` in the project root, on the store at ``url``."""
    return subprocess.Popen([sys.executable, "-m", "workhorse", *args], cwd=ROOT,
                            env={**os.environ, "WORKHORSE_URL": url})


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """SIGTERM each, then wait (SIGKILL after 10 s)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
