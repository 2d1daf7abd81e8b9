"""schemathesis fuzzes the API of a running ``workhorse ui`` against its OpenAPI document.

Every check schemathesis has runs (no 5xx, status codes, content types and bodies as
documented, bad input rejected, auth enforced, deleted jobs gone), with a bounded number of
examples per operation and a fixed seed (SCHEMATHESIS_SEED overrides it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.web.populate import populate
from tests.web.servers import APP, free_port, stop, wait_until, workhorse
from tests.web.webapp import make_app


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "fuzz.db")

    async def seed() -> None:
        app = make_app(url)
        try:
            await populate(app)
        finally:
            await app.close()

    asyncio.run(seed())
    port = free_port()
    ui = workhorse(url, "ui", APP, "--port", str(port), "--token", "fuzz-token",
                   "--log-level", "warning")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/api/stats").status_code == 401, "the dashboard")
        schemathesis = Path(sys.executable).with_name("schemathesis")
        run = subprocess.run(
            [str(schemathesis), "run", f"{base}/api/openapi.json",
             "--header", "Authorization: Bearer fuzz-token", "--checks", "all",
             "--max-examples", "25", "--seed", os.environ.get("SCHEMATHESIS_SEED", "8"),
             "--no-shrink", "--request-timeout", "10"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        stop(ui)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "Server error" not in run.stdout
