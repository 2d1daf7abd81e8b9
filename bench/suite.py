"""One run of the suite: every selected workload on every selected system, with progress.

Imported by ``bench.main`` only once the Redis server to use is settled, since
``bench.config`` reads its location from the environment.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench import procs
from bench.systems import load_system
from bench.systems.base import System
from bench.workloads import Bench, Settings, StepFailed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"

#: (result key, workload, label) in the order they run for each system.
Step = tuple[str, str, str]
STEPS: tuple[Step, ...] = (
    ("enqueue_one", "enqueue", "enqueue one by one"),
    ("enqueue_bulk", "enqueue", "enqueue bulk"),
    ("throughput_1", "throughput", "process, 1 worker process"),
    ("throughput_2", "throughput", "process, 2 worker processes"),
    ("latency", "latency", "pickup latency"),
    ("idle", "idle", "idle worker"),
)


def not_applicable(system: System, key: str) -> str | None:
    """Why ``key`` does not apply to ``system``, or None."""
    if key == "enqueue_bulk" and system.bulk_api is None:
        return f"{system.name} has no bulk enqueue API"
    if key == "throughput_2" and system.in_process:
        return "memory:// cannot be shared between processes"
    return None


def runner_for(bench: Bench, system: System, key: str) -> Callable[[], dict[str, Any]]:
    return {
        "enqueue_one": lambda: bench.enqueue(system, "one"),
        "enqueue_bulk": lambda: bench.enqueue(system, "bulk"),
        "throughput_1": lambda: bench.throughput(system, 1),
        "throughput_2": lambda: bench.throughput(system, 2),
        "latency": lambda: bench.latency(system),
        "idle": lambda: bench.idle(system),
    }[key]


def headline(key: str, run: dict[str, Any]) -> str:
    """One run in a few words, for the progress log."""
    if key.startswith(("enqueue", "throughput")):
        return f"{run['rate']:,.0f} jobs/s"
    if key == "latency":
        return (f"p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
                f"max {run['max_ms']:.1f} ms")
    return f"{run['cpu_percent']:.2f}% CPU, {run['rss_mb']:.0f} MB RSS"


def describe_system(system: System) -> dict[str, Any]:
    return {"distribution": system.distribution, "redis_based": system.redis_based,
            "in_process": system.in_process, "one_api": system.one_api,
            "bulk_api": system.bulk_api, "concurrency": system.concurrency,
            "processes_how": system.processes_how, "notes": list(system.notes)}


class Suite:
    """One run of the selected workloads on the selected systems, with live progress."""

    def __init__(self, args: argparse.Namespace, console: Console,
                 results: dict[str, Any], previous: dict[str, Any] | None = None) -> None:
        self.console = console
        self.results = results
        #: The results file as it was before this run: what ``save`` merges this run into.
        self.previous = previous
        self.systems: list[str] = args.system_list
        self.steps = [step for step in STEPS if step[1] in args.workload_list]
        self.repeats = {key: args.idle_repeats if key == "idle" else args.repeats
                        for key, _, _ in self.steps}
        self.workdir = Path(tempfile.mkdtemp(prefix="whbench-"))
        settings = Settings(root=ROOT, workdir=self.workdir, jobs=args.jobs,
                            repeats=args.repeats, latency_jobs=args.latency_jobs,
                            latency_interval=args.latency_interval,
                            idle_seconds=args.idle_seconds)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console)
        self.task = self.progress.add_task(
            "starting", total=len(self.systems) * sum(self.repeats.values()))
        self.current = "starting"
        self.bench = Bench(settings, status=self._status)

    def _status(self, text: str) -> None:
        self.progress.update(self.task, description=f"{self.current}: {text}")

    def run(self) -> None:
        self.console.print(f"scratch (logs, SQLite): {self.workdir}")
        with self.progress:
            for name in self.systems:
                self.run_system(name)

    def run_system(self, name: str) -> None:
        entry: dict[str, Any] = {"workloads": {}}
        self.results["systems"][name] = entry
        try:
            system = load_system(name, self.workdir)
        except Exception as exc:
            reason = f"cannot load: {type(exc).__name__}: {exc}"
            self.console.print(f"[red]{name}: failed: {reason}")
            for key, _, _ in self.steps:
                entry["workloads"][key] = {"status": "failed", "reason": reason, "runs": []}
            self.progress.advance(self.task, sum(self.repeats.values()))
            return
        entry.update(describe_system(system))
        try:
            for key, _, label in self.steps:
                entry["workloads"][key] = self.run_workload(system, key, label)
                save(self.results, self.previous)
        finally:
            # Whatever happened, nothing of this system may outlive its turn.
            procs.kill_all(servers=False)
            try:
                self.bench.reset(system)
            except Exception as exc:
                self.console.print(f"[yellow]{name}: could not clear its store: {exc}")

    def run_workload(self, system: System, key: str, label: str) -> dict[str, Any]:
        """``repeats`` runs of one workload; the first failure ends it."""
        outcome: dict[str, Any] = {"status": "ok", "reason": None, "runs": []}
        repeats = self.repeats[key]
        why_not = not_applicable(system, key)
        if why_not:
            self.progress.advance(self.task, repeats)
            return {**outcome, "status": "n/a", "reason": why_not}
        for number in range(1, repeats + 1):
            self.current = f"{system.name} · {label} · run {number}/{repeats}"
            self.progress.update(self.task, description=self.current)
            try:
                run = runner_for(self.bench, system, key)()
            except Exception as exc:
                # StepFailed is the expected way to fail; anything else (a server gone, a
                # bug) is reported the same way, so that the run goes on.
                reason = str(exc) if isinstance(exc, StepFailed) else (
                    f"{type(exc).__name__}: {exc}")
                self.console.print(f"[red]{self.current}: failed: {reason}")
                self.progress.advance(self.task, repeats - number + 1)
                return {**outcome, "status": "failed", "reason": reason}
            outcome["runs"].append(run)
            self.console.print(f"{self.current}: {headline(key, run)}")
            self.progress.advance(self.task)
        return outcome


#: What describes one run, kept for each run whose systems are still in the results file.
#: ("calibration" is only in results measured with the former Redis counter; the report
#: names the systems that still carry such results.)
RUN_FIELDS = ("command", "started_at", "duration_s", "interrupted", "settings", "machine",
              "versions", "calibration")


def load_previous() -> dict[str, Any] | None:
    """The results file as it stands, or None if there is none (or it cannot be read)."""
    try:
        previous: dict[str, Any] = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous.get("systems"), dict) else None


def _run_record(results: dict[str, Any]) -> dict[str, Any]:
    record = {field: results[field] for field in RUN_FIELDS if field in results}
    record["systems"] = [name for name in results["settings"]["systems"]
                         if name in results["systems"]]
    return record


def merge(previous: dict[str, Any] | None, results: dict[str, Any]) -> dict[str, Any]:
    """This run's results merged into the ``previous`` results file.

    The systems this run measured replace theirs; every other system keeps its entry, and
    the run it came from stays listed in ``runs``. The top-level fields (command, settings,
    machine...) are this run's, except ``settings.systems`` (every system in the file, in
    the usual order) and ``versions`` (the union, this run's winning).
    """
    from bench.systems import NAMES

    current = _run_record(results)
    systems: dict[str, Any] = {}
    if previous:
        for name, entry in previous["systems"].items():
            if name not in results["systems"]:
                # Results written before runs were merged carry no "run": the file's own.
                systems[name] = {**entry, "run": entry.get("run", previous["started_at"])}
    for name, entry in results["systems"].items():
        systems[name] = {**entry, "run": results["started_at"]}
    order = [name for name in NAMES if name in systems]
    order += [name for name in systems if name not in order]
    runs: list[dict[str, Any]] = []
    if previous:
        runs = list(previous.get("runs") or [_run_record(previous)])
    runs = [run for run in runs if run["started_at"] != current["started_at"]] + [current]
    used = {entry["run"] for entry in systems.values()}
    runs = [run for run in runs if run["started_at"] in used]
    for run in runs:
        run["systems"] = [name for name in order if systems[name]["run"] == run["started_at"]]
    versions: dict[str, str] = {}
    for run in runs:
        versions.update(run.get("versions", {}))
    return {**results, "settings": {**results["settings"], "systems": order},
            "versions": versions, "systems": {name: systems[name] for name in order},
            "runs": runs}


def save(results: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write this run's ``results`` merged into ``previous`` (see ``merge``); the merge."""
    merged = merge(previous, results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
    return merged
