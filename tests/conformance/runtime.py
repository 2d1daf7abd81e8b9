"""Helpers of the runtime-level conformance tests: an App on the backend under test and
workers with short intervals, so leases, heartbeats and reaping happen within a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import workhorse as wh

FAST = {"lease": 2.0, "heartbeat": 0.1, "reap_interval": 0.1, "poll_interval": 0.05,
        "prune_interval": 0}


@contextlib.asynccontextmanager
async def running_worker(app: wh.App, **options: Any) -> AsyncIterator[wh.Worker]:
    """A started Worker with FAST settings (overridable), stopped on exit."""
    worker = wh.Worker(app, **{**FAST, **options})
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop(timeout=5)


async def wait_state(ref: wh.JobRef, *states: wh.State, timeout: float = 10.0) -> wh.State:
    """Wait (bounded) until the job is in one of ``states``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await ref.status()
        if state in states:
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {ref.id} is {state}, not {states}, after {timeout}s")
        await asyncio.sleep(0.01)
