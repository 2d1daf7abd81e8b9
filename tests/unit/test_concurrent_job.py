import asyncio
import itertools
import time

import pytest

import workhorse as wh


async def test_workers_ramp_up_one_per_start_interval_and_stay_bounded():
    app = wh.App("memory://")
    release = asyncio.Event()
    cj = None
    observed = []  # (running_workers, time) at each run's start

    @app.handler("load")
    async def load(job: wh.Job) -> None:
        observed.append((cj.running_workers, time.monotonic()))
        await release.wait()

    cj = wh.ConcurrentJob(app, wh.Job("load"), max_workers=4, start_interval=0.05)
    await cj.start()
    await asyncio.wait_for(cj.ramped.wait(), 5)
    assert cj.running_workers == 4
    # Let the event loop run more: no fifth worker may appear.
    for _ in range(20):
        await asyncio.sleep(0)
    assert cj.running_workers == 4
    assert [count for count, _ in observed] == [1, 2, 3, 4]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(observed)]
    assert all(gap >= 0.045 for gap in gaps), gaps
    release.set()
    assert await cj.join(5)
    assert cj.running_workers == 0
    await cj.stop()


async def test_every_interval_runs_repeat_on_each_worker_until_stop():
    app = wh.App("memory://")
    active, peak, runs = 0, 0, 0
    enough = asyncio.Event()

    @app.handler("poll")
    async def poll(job: wh.Job) -> None:
        nonlocal active, peak, runs
        active += 1
        runs += 1
        peak = max(peak, active)
        if runs >= 12:
            enough.set()
        await asyncio.sleep(0.005)
        active -= 1

    async with wh.ConcurrentJob(app, wh.Job("poll"), max_workers=3, every=0.01,
                                start_interval=0.0) as cj:
        await asyncio.wait_for(enough.wait(), 10)
        assert cj.running_workers == 3
    assert peak <= 3
    assert cj.running_workers == 0


def test_arguments_are_validated():
    app = wh.App("memory://")
    app.register("x", lambda job: None)
    with pytest.raises(ValueError):
        wh.ConcurrentJob(app, wh.Job("x"), max_workers=0)
    with pytest.raises(wh.UnknownHandlerError):
        wh.ConcurrentJob(app, wh.Job("missing"), max_workers=1)
