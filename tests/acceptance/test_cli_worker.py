"""The CLI as a user runs it: enqueue jobs, run a worker, stop it with a signal."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "WORKHORSE_URL": "sqlite:///" + str(tmp_path / "cli.db"),
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


def cli(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "workhorse", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def job_state(env, job_id):
    code = ("import asyncio, cliapp\n"
            f"r = asyncio.run(cliapp.app.ref({job_id!r}).record())\n"
            "print(r.state.value, r.result.decode() if r.result else '')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip().split(maxsplit=1)


def test_enqueue_then_worker_runs_it_and_stops_on_sigterm(env):
    sent = cli(env, "enqueue", "cliapp:app", "greet", "--args", '{"name": "ada"}', "--json")
    assert sent.returncode == 0, sent.stderr
    job_id = json.loads(sent.stdout)["id"]
    later = cli(env, "enqueue", "cliapp:app", "greet", "--args", '{"name": "bob"}', "--in", "1h")
    assert job_state(env, later.stdout.strip())[0] == "scheduled"

    worker = subprocess.Popen([sys.executable, "-m", "workhorse", "worker", "cliapp:app",
                               "-c", "2", "--queues", "mail=1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The result is awaited from this test's process while the worker runs in its own.
    awaiting = ("import asyncio, cliapp\n"
                f"print(asyncio.run(cliapp.app.ref({job_id!r}).result(timeout=60)))")
    try:
        got = subprocess.run([sys.executable, "-c", awaiting], env=env, capture_output=True,
                             text=True, timeout=90)
        assert got.stdout.strip() == "hello ada", got.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert job_state(env, job_id) == ["succeeded", '"hello ada"']


def test_worker_processes_option_starts_several_processes(env):
    worker = subprocess.Popen([sys.executable, "-m", "workhorse", "worker", "cliapp:app",
                               "--processes", "2", "--queues", "mail"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    code = ("import asyncio, cliapp\n"
            "async def main():\n"
            "    b = await cliapp.app.backend()\n"
            "    print(len(await b.workers()))\n"
            "    await cliapp.app.close()\n"
            "asyncio.run(main())")
    try:
        deadline = time.monotonic() + 60
        while True:
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, timeout=60)
            if out.stdout.strip() == "2":
                break
            assert time.monotonic() < deadline, out.stderr
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert worker.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "cliapp:app", "greet", "--args", "{bad"], "--args is not valid JSON"),
        (["enqueue", "cliapp:app", "greet", "--in", "soon"], "not a duration"),
        (["enqueue", "nomodule:app", "greet"], "cannot load the app 'nomodule:app'"),
        (["worker", "cliapp"], "not of the form module:app"),
    ],
)
def test_bad_input_gets_a_clear_error(env, args, message):
    proc = cli(env, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
