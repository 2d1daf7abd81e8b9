"""The worker as operators watch it: JSON log lines, and /healthz and /readyz on its port
while its store goes away and comes back."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import workhorse as wh
from tests.faults.servers import RedisServer, spare_port
from tests.http_probe import get, wait_for_status

HERE = Path(__file__).resolve().parent


def environment(url):
    return {**os.environ, "WORKHORSE_URL": url,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


def start_worker(url, *args):
    return subprocess.Popen([sys.executable, "-m", "workhorse", "worker", "obsapp:app",
                             "--reap-interval", "0.5", *args], env=environment(url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(worker):
    worker.send_signal(signal.SIGTERM)
    try:
        _, err = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        _, err = worker.communicate(timeout=10)
    return err


async def test_worker_log_format_json_writes_one_json_line_per_job_run(tmp_path):
    url = "sqlite:///" + str(tmp_path / "obs.db")
    app = wh.App(url)
    try:
        greet = await app.enqueue("greet", {"name": "secret@example.com"})
        flaky = await app.enqueue("flaky")
        worker = start_worker(url, "--log-format", "json")
        try:
            assert await greet.result(timeout=60) == "hello secret@example.com"
            assert await flaky.result(timeout=60) == "ok"
        finally:
            err = stop(worker)
    finally:
        await app.close()
    assert worker.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    runs = [line for line in lines if line["logger"] == "workhorse.job"]
    # One line per run (the two jobs run concurrently, so in either order).
    assert sorted((r["job_id"], r["job_name"], r["attempt"], r["status"], r["state"])
                  for r in runs) == sorted([(greet.id, "greet", 1, 200, "succeeded"),
                                            (flaky.id, "flaky", 1, 500, "retrying"),
                                            (flaky.id, "flaky", 2, 200, "succeeded")])
    by_attempt = {(r["job_name"], r["attempt"]): r for r in runs}
    assert len(by_attempt) == len(runs) == 3
    failed = by_attempt["flaky", 1]
    assert (failed["level"], failed["status"], failed["state"]) == ("WARNING", 500, "retrying")
    assert "first attempt fails" in failed["error"]
    for run in runs:
        assert run["queue"] == "default" and run["duration_ms"] >= 0
    # No payloads by default: the args' e-mail address appears in no line.
    assert "secret@example.com" not in err


async def test_health_endpoints_follow_the_loop_and_the_store(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    port = spare_port()
    worker = start_worker(redis.url, "--metrics-port", str(port), "--metrics-host",
                          "127.0.0.1", "--log-format", "json")
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_status(base + "/healthz", 200) == (200, "ok\n")
        assert wait_for_status(base + "/readyz", 200)[0] == 200
        app = wh.App(redis.url)
        try:
            ref = await app.enqueue("greet", {"name": "ada"})
            assert await ref.result(timeout=30) == "hello ada"
        finally:
            await app.close()

        redis.stop()
        _, body = wait_for_status(base + "/readyz", 503)
        assert "store" in body
        assert get(base + "/healthz")[0] == 200  # the loop still answers

        redis.start()  # same port, same data directory
        assert wait_for_status(base + "/readyz", 200)[0] == 200
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/nothing")[0] == 404
    finally:
        err = stop(worker)
        redis.stop()
    assert worker.returncode == 0, err
