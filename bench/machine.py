"""What the numbers were measured on: the machine, the servers and the library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import redis

from bench.config import BENCH_REDIS_URL, POSTGRES_DSN

#: Distributions whose exact versions go with the results.
DISTRIBUTIONS = ("workhorse", "rq", "arq", "saq", "dramatiq", "celery", "kombu", "huey",
                 "taskiq", "taskiq-redis", "procrastinate", "redis", "hiredis", "psycopg",
                 "psycopg-pool", "msgspec", "psutil", "matplotlib")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def redis_version() -> str:
    try:
        client = redis.Redis.from_url(BENCH_REDIS_URL)
        return str(cast(dict[str, Any], client.info("server"))["redis_version"])
    except redis.RedisError as exc:
        return f"unavailable ({exc})"


def postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"
    except Exception as exc:
        return f"unavailable ({exc})"


def versions() -> dict[str, str]:
    """The installed version of each distribution measured or used."""
    found: dict[str, str] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe() -> dict[str, Any]:
    """The machine and the servers, for the results."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib(), 1),
        "os": f"{os_name()}, Linux {platform.release()}",
        "python": platform.python_version(),
        "redis": redis_version(),
        "postgresql": postgres_version(),
    }
