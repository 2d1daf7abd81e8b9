"""Regenerate the Python code of ``jobs.proto``: ``python -m workhorse.grpc.regenerate``.

Runs ``grpc_tools.protoc`` (the ``grpcio-tools`` package, a dev dependency) with the proto
directory ``src/workhorse/grpc/_proto`` as its include root, so the file is known to
protobuf as ``workhorse/v1/jobs.proto`` (a name unlikely to clash in a process's descriptor
pool), then rewrites the generated ``from workhorse.v1 import`` lines to the package's own
path, ``workhorse.grpc._proto.workhorse.v1``. ``--out DIR`` writes the files there instead
of beside the proto (the test comparing the committed code with the proto uses it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent / "_proto"
#: The proto's path under ``PROTO_ROOT``, which is also its name in the descriptor pool.
PROTO = "workhorse/v1/jobs.proto"
#: What protoc writes for the proto's own import path, and what the package needs instead.
_GENERATED_IMPORT = "from workhorse.v1 import "
_PACKAGE_IMPORT = "from workhorse.grpc._proto.workhorse.v1 import "
#: The generated files, relative to the output root.
GENERATED = ("workhorse/v1/jobs_pb2.py", "workhorse/v1/jobs_pb2.pyi",
             "workhorse/v1/jobs_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Run protoc into ``out`` (its ``workhorse/v1/`` subfolder); returns the files written."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise SystemExit("regenerating needs grpcio-tools: pip install grpcio-tools") from exc
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
                            f"--python_out={scratch}", f"--pyi_out={scratch}",
                            f"--grpc_python_out={scratch}", str(PROTO_ROOT / PROTO)])
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        written = []
        for name in GENERATED:
            source = Path(scratch) / name
            text = source.read_text().replace(_GENERATED_IMPORT, _PACKAGE_IMPORT)
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT,
                        help="output root (default: beside the proto)")
    options = parser.parse_args(argv)
    for path in generate(options.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())


