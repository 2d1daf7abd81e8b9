"""Every ```python block in the README and docs/ runs as printed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def examples():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        for number, match in enumerate(BLOCK.finditer(path.read_text()), 1):
            yield pytest.param(match.group(1), id=f"{path.relative_to(ROOT)}#{number}")


@pytest.mark.parametrize("code", list(examples()))
def test_example_runs(code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
