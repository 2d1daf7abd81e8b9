import subprocess
import sys


def test_demo_runs_and_prints_a_summary_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "workhorse", "demo", "--jobs", "20"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "jobs/s" in out
    for expected in ("charge", "send_receipt", "sync_inventory", "forbidden", "timeout"):
        assert expected in out
