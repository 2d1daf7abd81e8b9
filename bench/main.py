"""The benchmark driver: ``bench/run [options]`` (``python -m bench.main`` in bench/.venv).

Runs each selected workload on each selected system, ``--repeats`` times, and merges them into
bench/results/latest.json: the systems run replace their own results there, the others keep
theirs. Then it writes docs/benchmarks.md (between its markers) and docs/benchmarks.png from
the merged file.
A system or workload that fails is reported as "failed: <reason>" and the run goes on.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from bench import procs
from bench.systems import NAMES

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("enqueue", "throughput", "latency", "idle")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Benchmark workhorse against its Python peers.")
    parser.add_argument("--jobs", type=int, default=10_000,
                        help="jobs per enqueue and throughput run (default: 10000)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each workload; the median is reported (default: 3)")
    parser.add_argument("--systems", default=",".join(NAMES),
                        help=f"comma-separated, from: {','.join(NAMES)} (default: all)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated, from: {','.join(WORKLOADS)} (default: all)")
    parser.add_argument("--latency-jobs", type=int, default=500,
                        help="latency jobs per run (default: 500)")
    parser.add_argument("--latency-interval", type=float, default=0.01,
                        help="seconds between two latency jobs (default: 0.01)")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="length of the idle CPU/RSS window (default: 30)")
    parser.add_argument("--idle-repeats", type=int, default=1,
                        help="idle windows per system (default: 1)")
    parser.add_argument("--private-redis", action="store_true",
                        help="start a redis-server of our own on a free port for this run, "
                             "instead of the shared one on 127.0.0.1:6379, so that other "
                             "clients cannot skew the Redis figures")
    parser.add_argument("--no-docs", action="store_true",
                        help="write only the JSON results, not docs/benchmarks.{md,png}")
    args = parser.parse_args(argv)
    args.system_list = _choices(parser, "--systems", args.systems, NAMES)
    args.workload_list = _choices(parser, "--workloads", args.workloads, WORKLOADS)
    if args.jobs < 1 or args.repeats < 1 or args.latency_jobs < 1 or args.idle_repeats < 1:
        parser.error("--jobs, --repeats, --latency-jobs and --idle-repeats must be >= 1")
    return args


def _choices(parser: argparse.ArgumentParser, flag: str, text: str,
             known: tuple[str, ...]) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in known]
    if unknown or not chosen:
        parser.error(f"{flag}: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(known)}")
    return [name for name in known if name in chosen]


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    console = Console()
    atexit.register(procs.kill_all)
    signal.signal(signal.SIGTERM, _interrupt)
    # Even where SIGINT was ignored (started in the background by a script), Ctrl-C or
    # kill -INT must stop the run and its processes.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    redis_server = "shared, 127.0.0.1:6379"
    if args.private_redis:
        port = procs.start_private_redis(Path(tempfile.mkdtemp(prefix="whbench-redis-")))
        os.environ["BENCH_REDIS_PORT"] = str(port)  # read by bench.config, imported below
        redis_server = f"private to this run, 127.0.0.1:{port}"
    # Imported here, once the Redis server is settled: bench.config reads it on import.
    from bench import machine, report
    from bench.suite import RESULTS, Suite, load_previous, save

    # A run of some systems replaces only theirs in the results file; the others stay.
    previous = load_previous()

    started = time.time()
    results: dict[str, Any] = {
        "command": shlex.join(["bench/run", *argv]),
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {"jobs": args.jobs, "repeats": args.repeats,
                     "systems": args.system_list, "workloads": args.workload_list,
                     "latency_jobs": args.latency_jobs,
                     "latency_interval_s": args.latency_interval,
                     "idle_seconds": args.idle_seconds, "idle_repeats": args.idle_repeats,
                     "redis_server": redis_server},
        "machine": machine.describe(),
        "versions": machine.versions(),
        "systems": {},
    }
    interrupted = False
    try:
        Suite(args, console, results, previous).run()
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: stopping every process started")
    finally:
        procs.kill_all()
        results["duration_s"] = round(time.time() - started, 1)
        results["interrupted"] = interrupted
        merged = save(results, previous)
    console.print(f"results: {RESULTS.relative_to(ROOT)} "
                  f"({results['duration_s'] / 60:.1f} min)")
    if interrupted:
        return 130
    if not args.no_docs:
        markdown, chart = report.write(merged, ROOT / "docs")
        console.print(f"report: {markdown.relative_to(ROOT)}, {chart.relative_to(ROOT)}")
    console.print(report.summary_table(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
