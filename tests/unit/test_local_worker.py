import asyncio
import threading
import time

import pytest

import workhorse as wh


def make_app():
    return wh.App("memory://")


async def test_perform_sync_returns_the_finished_run_and_leaves_the_job_unchanged():
    app = make_app()
    app.register("double", lambda job: job.args["n"] * 2)
    job = wh.Job("double", args={"n": 21})
    async with wh.LocalWorker(app) as worker:
        done = await worker.perform(job, sync=True)
    assert done.result == 42 and done.id == job.id and done.attempt == 1
    assert job.result is None and job.attempt == 0


async def test_in_process_args_may_be_any_python_object():
    class Producer:
        def __init__(self):
            self.sent = []

    producer = Producer()
    app = make_app()
    app.register("publish", lambda job: job.args["producer"].sent.append("hello"))
    async with wh.LocalWorker(app) as worker:
        await worker.perform(wh.Job("publish", args={"producer": producer}), sync=True)
    assert producer.sent == ["hello"]


async def test_perform_async_returns_a_task():
    gate = asyncio.Event()
    app = make_app()

    @app.handler("wait")
    async def wait(job: wh.Job) -> str:
        await gate.wait()
        return "opened"

    async with wh.LocalWorker(app) as worker:
        task = await worker.perform(wh.Job("wait"))
        assert not task.done()
        gate.set()
        assert (await asyncio.wait_for(task, 5)).result == "opened"


async def test_perform_in_and_perform_at_wait_for_their_time():
    app = make_app()
    app.register("stamp", lambda job: time.time())
    async with wh.LocalWorker(app) as worker:
        asked = time.time()
        later = worker.perform_in(wh.Job("stamp"), 0.2)
        at = worker.perform_at(wh.Job("stamp"), asked + 0.3)
        ran_later, ran_at = await asyncio.wait_for(asyncio.gather(later, at), 5)
    assert ran_later.result >= asked + 0.2
    assert ran_at.result >= asked + 0.3
    assert ran_later.run_at == pytest.approx(asked + 0.2, abs=0.05)


async def test_unknown_handler_is_refused_at_once():
    async with wh.LocalWorker(make_app()) as worker:
        with pytest.raises(wh.UnknownHandlerError, match="'nope'"):
            await worker.perform(wh.Job("nope"))


async def test_perform_before_start_is_a_clear_error():
    app = make_app()
    app.register("noop", lambda job: None)
    with pytest.raises(RuntimeError, match="not started"):
        await wh.LocalWorker(app).perform(wh.Job("noop"))


async def test_concurrency_bounds_runs_in_progress():
    active, peak = 0, 0
    app = make_app()

    @app.handler("busy")
    async def busy(job: wh.Job) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    async with wh.LocalWorker(app, concurrency=3) as worker:
        tasks = [await worker.perform(wh.Job("busy")) for _ in range(20)]
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert peak == 3


async def overlap_probe(sync: bool) -> tuple[int, int]:
    """Run a handler that outlasts the interval; return (runs, max overlapping)."""
    app = make_app()
    active, peak, runs = 0, 0, 0
    enough = asyncio.Event()

    @app.handler("tick")
    async def tick(job: wh.Job) -> None:
        nonlocal active, peak, runs
        active += 1
        runs += 1
        peak = max(peak, active)
        if runs >= 4:
            enough.set()
        await asyncio.sleep(0.05)  # 2.5x the interval
        active -= 1

    async with wh.LocalWorker(app, concurrency=10) as worker:
        worker.perform_every(wh.Job("tick"), 0.02, sync=sync)
        await asyncio.wait_for(enough.wait(), 10)
    return runs, peak


async def test_perform_every_sync_never_overlaps():
    runs, peak = await overlap_probe(sync=True)
    assert runs >= 4 and peak == 1


async def test_perform_every_async_overlaps_when_runs_outlast_the_interval():
    runs, peak = await overlap_probe(sync=False)
    assert runs >= 4 and peak >= 2


async def test_perform_every_gives_each_run_a_new_id():
    ids = []
    enough = asyncio.Event()
    app = make_app()

    @app.handler("tick")
    async def tick(job: wh.Job) -> None:
        ids.append(job.id)
        if len(ids) == 3:
            enough.set()

    async with wh.LocalWorker(app) as worker:
        worker.perform_every(wh.Job("tick"), 0.01, sync=True)
        await asyncio.wait_for(enough.wait(), 5)
    assert len(set(ids)) == len(ids)


async def test_perform_receive_runs_once_per_value_from_an_async_iterable():
    got = []
    app = make_app()

    @app.handler("consume")
    async def consume(job: wh.Job) -> None:
        got.append((job.message, job.args["topic"]))

    async def source():
        for value in ["a", "b", "c"]:
            yield value

    async with wh.LocalWorker(app) as worker:
        await asyncio.wait_for(
            worker.perform_receive(wh.Job("consume", args={"topic": "t"}), source()), 5)
    assert sorted(got) == [("a", "t"), ("b", "t"), ("c", "t")]


async def test_perform_receive_from_a_queue_marks_each_item_done_after_its_run():
    got = []
    app = make_app()
    app.register("consume", lambda job: got.append(job.message))
    queue: asyncio.Queue = asyncio.Queue()
    async with wh.LocalWorker(app) as worker:
        worker.perform_receive(wh.Job("consume"), queue, sync=True)
        for n in range(5):
            queue.put_nowait(n)
        await asyncio.wait_for(queue.join(), 5)
        assert got == [0, 1, 2, 3, 4]


async def test_register_on_the_worker_registers_on_the_app():
    app = make_app()
    async with wh.LocalWorker(app) as worker:
        worker.register("hello", lambda job: "hi")
        assert (await worker.perform(wh.Job("hello"), sync=True)).result == "hi"


def workhorse_threads():
    return [t for t in threading.enumerate() if t.name.startswith("workhorse")]


async def test_stop_leaves_no_task_thread_or_timer_behind():
    app = make_app()
    app.register("sync_work", lambda job: time.sleep(0.01))

    @app.handler("async_work")
    async def async_work(job: wh.Job) -> None:
        await asyncio.sleep(0.01)

    queue: asyncio.Queue = asyncio.Queue()
    ran = asyncio.Event()
    app.register("mark", lambda job: ran.set())
    tasks_before = asyncio.all_tasks()
    worker = wh.LocalWorker(app, concurrency=4)
    await worker.start()
    for _ in range(6):
        await worker.perform(wh.Job("sync_work"))
    worker.perform_every(wh.Job("async_work"), 0.01, sync=False)
    worker.perform_every(wh.Job("sync_work"), 0.01, sync=True)
    worker.perform_in(wh.Job("async_work"), 3600)  # a timer far in the future
    worker.perform_receive(wh.Job("mark"), queue)
    queue.put_nowait("x")
    await asyncio.wait_for(ran.wait(), 5)
    assert workhorse_threads(), "sync handlers should have started pool threads"
    await worker.stop(timeout=5)
    assert asyncio.all_tasks() == tasks_before
    assert workhorse_threads() == []
    assert worker.running == 0


async def test_graceful_stop_lets_running_jobs_finish():
    finished = []
    started = asyncio.Event()
    app = make_app()

    @app.handler("work")
    async def work(job: wh.Job) -> None:
        started.set()
        await asyncio.sleep(0.05)
        finished.append(job.id)

    worker = wh.LocalWorker(app)
    await worker.start()
    task = await worker.perform(wh.Job("work"))
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(graceful=True, timeout=5)
    assert finished == [task.result().id]


async def test_stop_past_the_grace_period_cancels_runs_with_499():
    started = asyncio.Event()
    app = make_app()

    @app.handler("forever")
    async def forever(job: wh.Job) -> None:
        started.set()
        await asyncio.Event().wait()

    worker = wh.LocalWorker(app)
    await worker.start()
    task = await worker.perform(wh.Job("forever"))
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(graceful=True, timeout=0.01)
    assert task.cancelled()


def test_concurrency_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        wh.LocalWorker(make_app(), concurrency=0)
