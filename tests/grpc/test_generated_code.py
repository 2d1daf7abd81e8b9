"""The committed generated code is what the proto generates, and imports the right grpc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from workhorse.grpc import regenerate


def test_committed_code_matches_the_proto(tmp_path: Path):
    regenerate.generate(tmp_path)
    stale = [name for name in regenerate.GENERATED
             if (tmp_path / name).read_text() != (regenerate.PROTO_ROOT / name).read_text()]
    assert stale == [], "run: python -m workhorse.grpc.regenerate (and commit the result)"


def test_the_regenerate_command_writes_where_told(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "workhorse.grpc.regenerate", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.py*")) == \
        sorted(regenerate.GENERATED)


def test_importing_workhorse_does_not_import_grpc():
    code = ("import sys, workhorse as wh; assert 'grpc' not in sys.modules; "
            "import workhorse.cli; assert 'grpc' not in sys.modules; "
            "client = wh.grpc.Client; import grpc; "
            "assert grpc.__file__ != wh.grpc.__file__ and hasattr(grpc, 'aio')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_without_grpcio_the_cli_works_and_the_error_names_the_extra():
    # ``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed.
    code = ("import sys; sys.modules['grpc'] = None\n"
            "from click.testing import CliRunner\n"
            "from workhorse.cli import main\n"
            "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
            "result = CliRunner().invoke(main, ['grpc', 'x:app'])\n"
            "assert result.exit_code == 1 and 'workhorse[grpc]' in result.output, result.output\n"
            "import workhorse as wh\n"
            "try:\n"
            "    wh.grpc.Client\n"
            "except ImportError as exc:\n"
            "    assert 'workhorse[grpc]' in str(exc), exc\n"
            "else:\n"
            "    raise AssertionError('no ImportError')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
