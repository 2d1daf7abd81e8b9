import os
import subprocess
import sys


def test_demo_runs_on_sqlite_and_prints_what_happened(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "workhorse", "demo", "--jobs", "40"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sqlite:///workhorse-demo.db" in out
    assert (tmp_path / "workhorse-demo.db").exists()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.startswith("│")}
    # handler: succeeded, succeeded after retries, dead, still queued
    assert rows["charge"][:3] == ["40", "0", "0"]
    assert rows["send_receipt"][:3] == ["5", "5", "0"]
    assert rows["sync_inventory"][:3] == ["0", "0", "1"]
    assert rows["nightly_report"][0] == "1"
    assert int(rows["refresh_prices"][0]) >= 2
