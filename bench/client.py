"""The producer subprocess: ``python -m bench.client '<json spec>'``.

The driver runs every call into a library here, in a process it can kill, and reads one
JSON line from stdout. Operations:

- ``enqueue``: enqueue ``count`` no-op jobs one by one (``mode: "one"``) or with the bulk
  call (``"bulk"``), timed after connecting; with ``meter``, Redis usage of that window;
- ``latency``: enqueue ``count`` latency jobs ``interval`` seconds apart (on a fixed
  schedule, so a slow enqueue does not shift the ones after it);
- for in-process systems (``memory://``), whose worker must share this process:
  ``throughput``, ``latency-inproc`` and ``idle`` (which prints ``{"ready": true}``, then
  keeps the worker running until stdin closes).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.redisstats import RedisMeter
from bench.systems import load_system
from bench.systems.base import System


async def enqueue(system: System, spec: dict[str, Any]) -> dict[str, Any]:
    count, target = int(spec["count"]), int(spec["target"])
    await system.open()
    meter = RedisMeter() if spec.get("meter") else None
    try:
        if meter:
            meter.start()
        started = time.perf_counter()
        if spec["mode"] == "bulk":
            await system.enqueue_noop_bulk(count, target)
        else:
            for _ in range(count):
                await system.enqueue_noop(target)
        seconds = time.perf_counter() - started
        usage = meter.stop() if meter else None
    finally:
        await system.close()
    return {"seconds": seconds, "redis": usage.as_dict() if usage else None}


async def send_latency_jobs(system: System, count: int, interval: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(count):
        delay = start + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await system.enqueue_latency(count)


async def latency(system: System, spec: dict[str, Any]) -> dict[str, Any]:
    await system.open()
    try:
        await send_latency_jobs(system, int(spec["count"]), float(spec["interval"]))
    finally:
        await system.close()
    return {}


async def warm_up(system: System, timeout: float) -> None:
    """Run one job through the in-process worker, then forget it."""
    counter = system.local_counter()
    await system.enqueue_noop(1)
    await asyncio.wait_for(counter.done.wait(), timeout)
    counter.reset()


async def throughput_inproc(system: System, spec: dict[str, Any]) -> dict[str, Any]:
    count, timeout = int(spec["count"]), float(spec["timeout"])
    counter = system.local_counter()
    await system.open()
    try:
        await system.enqueue_noop_bulk(count, count)
        async with system.in_process_worker():
            await asyncio.wait_for(counter.done.wait(), timeout)
    finally:
        await system.close()
    return counter.summary()


async def latency_inproc(system: System, spec: dict[str, Any]) -> dict[str, Any]:
    count, interval = int(spec["count"]), float(spec["interval"])
    timeout = float(spec["timeout"])
    counter = system.local_counter()
    await system.open()
    try:
        async with system.in_process_worker():
            await warm_up(system, timeout)
            await send_latency_jobs(system, count, interval)
            await asyncio.wait_for(counter.done.wait(), timeout)
    finally:
        await system.close()
    return counter.summary()


async def idle_inproc(system: System, spec: dict[str, Any]) -> dict[str, Any]:
    await system.open()
    try:
        async with system.in_process_worker():
            await warm_up(system, float(spec["timeout"]))
            print(json.dumps({"ready": True}), flush=True)
            # Until the driver closes our stdin; reading it in a thread keeps the loop idle.
            await asyncio.to_thread(sys.stdin.read)
    finally:
        await system.close()
    return {}


OPERATIONS = {
    "enqueue": enqueue,
    "latency": latency,
    "throughput": throughput_inproc,
    "latency-inproc": latency_inproc,
    "idle": idle_inproc,
}


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    system = load_system(spec["system"], Path(spec["workdir"]))
    result = asyncio.run(OPERATIONS[spec["op"]](system, spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
