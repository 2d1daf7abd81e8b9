"""What a run costs Redis: commands (``INFO commandstats``) and CPU (``INFO cpu``).

``CONFIG RESETSTAT`` zeroes the command counts at the start of a window; the CPU counters
cannot be reset, so the window's CPU is a difference. The server is shared by everything on
this machine, so a window measures whatever else talks to Redis meanwhile too.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any, cast

import redis

from bench.config import BENCH_REDIS_URL


def used_cpu(client: redis.Redis) -> float:
    """Redis's CPU seconds so far (system + user, every thread)."""
    # redis-py types its replies for both its sync and async clients; this one is sync.
    info = cast(dict[str, Any], client.info("cpu"))
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclasses.dataclass
class RedisUsage:
    """Commands by name and CPU seconds spent by Redis in one window."""

    calls: Counter[str]
    cpu_seconds: float

    def minus(self, calls: Mapping[str, int], cpu_seconds: float = 0.0) -> RedisUsage:
        """This usage without some commands and CPU (the meter's own; never below zero)."""
        left = Counter(self.calls)
        left.subtract(calls)
        return RedisUsage(+left, max(0.0, self.cpu_seconds - cpu_seconds))

    def per_1000(self, jobs: int) -> dict[str, Any]:
        """Commands and CPU milliseconds per 1,000 jobs, with the top commands."""
        scale = 1000 / jobs
        total = sum(self.calls.values())
        return {
            "commands": round(total * scale, 1),
            "cpu_ms": round(self.cpu_seconds * 1000 * scale, 2),
            "top": {name: round(n * scale, 1) for name, n in self.calls.most_common(5)},
        }

    def as_dict(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "cpu_seconds": self.cpu_seconds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RedisUsage:
        return cls(Counter(data["calls"]), float(data["cpu_seconds"]))


class RedisMeter:
    """Measure one window: ``start()``, the work, then ``stop()``."""

    #: The meter's own commands that land inside the window: the reset, and the INFO cpu
    #: read at the end (the INFO commandstats read after it is not yet counted in its reply).
    OWN_CALLS: Mapping[str, int] = {"config|resetstat": 1, "info": 1}

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or redis.Redis.from_url(BENCH_REDIS_URL)
        self._cpu_start = 0.0

    def start(self) -> None:
        self._cpu_start = used_cpu(self.client)
        self.client.config_resetstat()

    def stop(self) -> RedisUsage:
        cpu = used_cpu(self.client) - self._cpu_start
        stats = cast(dict[str, Any], self.client.info("commandstats"))
        calls: Counter[str] = Counter({
            name.removeprefix("cmdstat_"): int(values["calls"])
            for name, values in stats.items()
        })
        return RedisUsage(calls, cpu).minus(self.OWN_CALLS)

