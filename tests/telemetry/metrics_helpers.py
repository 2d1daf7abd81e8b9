"""Helpers of the metrics tests: run a known batch of work and read what each output saw."""

import contextlib
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

import workhorse as wh
from workhorse.errors import JobFailed

#: Bound of every wait in these tests, seconds.
WAIT = 10.0

#: The known batch: (handler, how many). greet succeeds, reject fails for good (400),
#: flaky fails once (503) then succeeds, give_up ends cancelled (499).
BATCH = (("greet", 3), ("reject", 2), ("flaky", 1), ("give_up", 1))

#: What the batch makes every output count, as {(metric, labels): value}; labels sorted.
EXPECTED_RUNS = {
    ("completed", (("name", "greet"), ("queue", "default"), ("status", "200"))): 3,
    ("completed", (("name", "flaky"), ("queue", "default"), ("status", "200"))): 1,
    ("failed", (("name", "reject"), ("queue", "default"), ("status", "400"))): 2,
    ("failed", (("name", "flaky"), ("queue", "default"), ("status", "503"))): 1,
    ("retried", (("name", "flaky"), ("queue", "default"), ("status", "503"))): 1,
    ("dead", (("name", "reject"), ("queue", "default"), ("status", "400"))): 2,
    ("cancelled", (("name", "give_up"), ("queue", "default"), ("status", "499"))): 1,
}
#: Runs per handler (flaky runs twice): the count of each duration and wait histogram.
EXPECTED_RUN_COUNTS = {"greet": 3, "reject": 2, "flaky": 2, "give_up": 1}
#: Jobs in the store afterwards by (queue, state), zeros left out; one greet is delayed.
EXPECTED_DEPTH = {("default", "succeeded"): 4, ("default", "dead"): 2,
                  ("default", "cancelled"): 1, ("default", "scheduled"): 1}


async def enqueue_batch(app: wh.App) -> list[wh.JobRef]:
    """Enqueue the batch, plus one greet due in an hour; the refs of the batch."""
    refs = await app.enqueue_many([wh.Job(name, args={"name": f"n{i}"})
                                   for name, count in BATCH for i in range(count)])
    await app.enqueue("greet", {"name": "later"}, delay=3600)
    return [ref for ref in refs if ref is not None]


async def wait_finished(refs: list[wh.JobRef]) -> None:
    """Wait (bounded) until every job of ``refs`` has finished, however it ended."""
    for ref in refs:
        with contextlib.suppress(JobFailed):
            await ref.result(timeout=WAIT)


async def run_batch(app: wh.App) -> None:
    """Run the batch on a Worker of ``app`` until the store has recorded every outcome."""
    worker = wh.Worker(app, poll_interval=0.02, log_runs=False)
    await worker.start()
    try:
        await wait_finished(await enqueue_batch(app))
    finally:
        await worker.stop()


def prometheus_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by (sample name, sorted labels)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def prometheus_runs(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The run counters of ``samples`` keyed as EXPECTED_RUNS, zeros left out."""
    found = {}
    for (name, labels), value in samples.items():
        for kind in ("completed", "failed", "retried", "dead", "cancelled"):
            if name == f"workhorse_jobs_{kind}_total" and value:
                found[(kind, labels)] = value
    return found


def histogram_counts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                     metric: str) -> Counter[str]:
    """The observation count of a Prometheus histogram per job name."""
    return Counter({dict(labels)["name"]: int(value) for (name, labels), value in samples.items()
                    if name == f"{metric}_count"})
