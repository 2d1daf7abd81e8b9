"""The systems under test: one module each, all behind ``bench.systems.base.System``.

To add one, write ``bench/systems/<name>_bench.py`` (a dash in the name becomes an
underscore) with its tasks and a ``SYSTEM`` instance, and add its name to ``NAMES``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from bench.systems.base import System

#: workhorse on each store first, then the peers; the default run measures them all.
WORKHORSE_STORES = ("memory", "sqlite", "redis", "postgres")
PEERS = ("rq", "arq", "saq", "dramatiq", "celery", "huey", "taskiq", "procrastinate",
         "saq-postgres")
NAMES = tuple(f"workhorse-{store}" for store in WORKHORSE_STORES) + PEERS


def load_system(name: str, workdir: Path) -> System:
    """Import the module of system ``name``; ``workdir`` holds its files (SQLite)."""
    if name not in NAMES:
        raise ValueError(f"unknown system {name!r}; known: {', '.join(NAMES)}")
    if name.startswith("workhorse-"):
        from bench.systems.workhorse_bench import WorkhorseSystem

        return WorkhorseSystem(name.removeprefix("workhorse-"), workdir)
    # "saq-postgres" lives in bench/systems/saq_postgres_bench.py.
    module = importlib.import_module(f"bench.systems.{name.replace('-', '_')}_bench")
    system: System = module.SYSTEM
    return system
