"""The admin commands as an operator runs them, each in its own process, on a store holding
jobs in every state; and a snapshot carried from SQLite to Redis to PostgreSQL."""

import asyncio
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import workhorse as wh
from tests.conformance.conftest import (
    BACKENDS,
    POSTGRES_URL,
    REDIS_URL,
    cleanup,
    private_namespace,
)
from tests.conformance.seeding import Seeded, as_moved, seed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
def url(request, tmp_path):
    """A store of each kind that outlives a process (memory:// cannot be shared with the
    CLI's processes); server stores get a private namespace or schema, removed after."""
    store = BACKENDS[request.param](tmp_path)
    yield store
    asyncio.run(cleanup(store))


@pytest.fixture
def env(url):
    return {**os.environ, "WORKHORSE_URL": url,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def jobs(url) -> Seeded:
    async def write() -> Seeded:
        app = wh.App(url)
        try:
            return await seed(await app.backend())
        finally:
            await app.close()

    return asyncio.run(write())


def cli(env, *args, code=0):
    """Run ``workhorse ARGS``; fail unless it exits with ``code``."""
    done = subprocess.run([sys.executable, "-m", "workhorse", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code, (args, done.stdout, done.stderr)
    return done


def cli_json(env, *args):
    return json.loads(cli(env, *args, "--json").stdout)


def state_of(env, job_id):
    """The job's state as ``get --json`` shows it; None if there is no such job."""
    done = subprocess.run([sys.executable, "-m", "workhorse", "get", job_id, "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout)["state"] if done.returncode == 0 else None


def test_reading_commands_show_every_state(env, jobs):
    seen = cli_json(env, "inspect", "--show-ids", "--peek", "5")
    counts = {q["name"]: q["counts"] for q in seen["queues"]}
    assert counts["q"] == {"ready": 1, "scheduled": 1, "running": 0, "retrying": 0,
                           "succeeded": 0, "dead": 0, "cancelled": 1}
    assert counts["work"] == {"ready": 0, "scheduled": 0, "running": 1, "retrying": 1,
                              "succeeded": 1, "dead": 1, "cancelled": 0}
    assert seen["ids"]["q"]["ready"] == [jobs.ready]
    assert seen["ids"]["work"]["running"] == [jobs.running]
    assert seen["stats"]["counts"] == {s.value: 1 for s in wh.State}
    table = cli(env, "inspect").stdout
    assert "queues" in table and "totals: ready=1 scheduled=1 running=1" in table

    assert cli(env, "queues").stdout.split() == ["q", "work"]
    assert [q["name"] for q in cli_json(env, "queues", "--with-counts")] == ["q", "work"]
    assert "succeeded" in cli(env, "queues", "--with-counts").stdout

    watched = cli(env, "stats", "--json", "--watch", "50ms", "--count", "2").stdout
    assert [json.loads(line)["busy"] for line in watched.splitlines()] == [1, 1]
    assert "busy" in cli(env, "stats").stdout

    dead = cli_json(env, "get", jobs.dead)
    assert (dead["state"], dead["args"], dead["idempotency_key"]) == \
        ("dead", {"n": 3}, "idem-dead")
    assert [(a["attempt"], a["status"], a["error"]) for a in dead["attempts"]] == \
        [(1, 400, "bad input")]
    shown = cli(env, "get", jobs.dead).stdout
    assert "bad input" in shown and "Traceback: bad" in shown and "idem-dead" in shown
    missing = cli(env, "get", "no-such-job", code=1)
    assert "no job no-such-job" in missing.stderr

    page = cli_json(env, "jobs", "--queue", "work", "--limit", "2", "--offset", "1")
    assert page["total"] == 4
    assert [j["id"] for j in page["items"]] == [jobs.retrying, jobs.dead]
    assert jobs.running in cli(env, "jobs", "--state", "running").stdout
    assert cli_json(env, "workers") == []


def test_destructive_commands_are_dry_runs_unless_applied(env, jobs):
    dry = cli(env, "retry").stdout
    assert "dry run: would retry 1 dead job(s)" in dry
    assert state_of(env, jobs.dead) == "dead"
    done = cli_json(env, "retry", "--apply")
    assert (done["dry_run"], done["count"]) == (False, 1)
    assert state_of(env, jobs.dead) == "ready"

    report = cli_json(env, "delete", "--id", jobs.running, "--id", jobs.cancelled)
    assert [(j["id"], j["done"]) for j in report["jobs"]] == \
        [(jobs.running, False), (jobs.cancelled, True)]
    assert "running job cannot be deleted" in report["jobs"][0]["why"]
    assert state_of(env, jobs.cancelled) == "cancelled"
    assert "deleted 1 job(s)" in cli(env, "delete", "--id", jobs.cancelled, "--apply").stdout
    assert state_of(env, jobs.cancelled) is None
    assert "give --id, or --state" in cli(env, "delete", code=2).stderr
    assert "would delete 1 succeeded" in cli(env, "delete", "--state", "succeeded").stdout

    assert cli_json(env, "requeue", "--queue", "q")["count"] == 1
    assert state_of(env, jobs.scheduled) == "scheduled"
    assert cli_json(env, "requeue", "--queue", "q", "--apply")["count"] == 1
    assert state_of(env, jobs.scheduled) == "ready"

    assert "would purge 2 ready" in cli(env, "purge", "q").stdout
    assert "purged 2 ready" in cli(env, "purge", "q", "--apply").stdout
    assert state_of(env, jobs.ready) is None

    assert cli_json(env, "dlq", "replay")["count"] == 0
    cli(env, "pause", "work", "mail")
    assert cli_json(env, "paused") == ["mail", "work"]
    cli(env, "resume", "mail", "--app", "cliapp:app")
    assert cli(env, "paused").stdout.split() == ["work"]
    assert "--url or --app" in cli(env, "paused", "--app", "cliapp:app", "--url", "memory://",
                                   code=2).stderr


def test_dump_and_shell_completion(env, jobs):
    rows = [json.loads(line) for line in cli(env, "dump", "--no-payload").stdout.splitlines()]
    assert len(rows) == 7 and all("payload" not in r for r in rows)
    [dead] = [json.loads(line) for line in
              cli(env, "dump", "--state", "dead").stdout.splitlines()]
    assert (dead["id"], json.loads(dead["payload"])) == (jobs.dead, {"n": 3})
    assert len(cli(env, "dump", "--limit", "3").stdout.splitlines()) == 3

    for shell in ("bash", "zsh", "fish"):
        assert "_WORKHORSE_COMPLETE" in cli(env, "completion", shell).stdout
    # What the shell asks through the script: commands, then the store's own queue names.
    complete = {**env, "_WORKHORSE_COMPLETE": "bash_complete"}
    words = cli({**complete, "COMP_WORDS": "workhorse pur", "COMP_CWORD": "1"}).stdout
    assert words.split() == ["plain,purge"]
    queues = cli({**complete, "COMP_WORDS": "workhorse purge ", "COMP_CWORD": "2"}).stdout
    assert queues.split() == ["plain,q", "plain,work"]


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_a_snapshot_moves_sqlite_to_redis_to_postgres(env, jobs, url, tmp_path):
    redis_url = private_namespace(REDIS_URL, "namespace")(tmp_path)
    postgres_url = private_namespace(POSTGRES_URL, "schema")(tmp_path)
    cli(env, "pause", "work")
    try:
        stores = [url, redis_url, postgres_url]
        files = []
        for source, target in itertools.pairwise(stores):
            snapshot = tmp_path / f"from-{len(files)}.jsonl"
            cli(env, "snapshot", "export", "--url", source, "--out", str(snapshot))
            files.append(snapshot)
            dry = cli(env, "snapshot", "import", "--url", target, "--in", str(snapshot)).stdout
            assert "dry run: would import up to 7 job(s) and 1 paused queue(s)" in dry
            assert cli_json(env, "stats", "--url", target)["counts"]["ready"] == 0
            done = cli_json(env, "snapshot", "import", "--url", target, "--in", str(snapshot),
                            "--apply")
            assert (done["imported"], done["skipped"], done["paused"]) == (7, 0, 1)
            again = cli_json(env, "snapshot", "import", "--url", target, "--in",
                             str(snapshot), "--apply")
            assert (again["imported"], again["skipped"]) == (0, 7)

        final = tmp_path / "final.jsonl"
        cli(env, "snapshot", "export", "--url", postgres_url, "--out", str(final))
        first = [json.loads(line) for line in files[0].read_text().splitlines()]
        last = [json.loads(line) for line in final.read_text().splitlines()]
        assert last == as_moved(first)  # every field of every job, ids and order kept

        counts = cli_json(env, "stats", "--url", postgres_url)
        assert counts["counts"] == {"ready": 2, "scheduled": 1, "running": 0, "retrying": 1,
                                    "succeeded": 1, "dead": 1, "cancelled": 1}
        assert counts["paused"] == ["work"]
        moved = cli_json(env, "get", jobs.dead, "--url", postgres_url)
        assert [a["error"] for a in moved["attempts"]] == ["bad input"]
        assert cli_json(env, "retry", "--id", jobs.dead, "--url", postgres_url,
                        "--apply")["count"] == 1
    finally:
        asyncio.run(cleanup(redis_url))
        asyncio.run(cleanup(postgres_url))
