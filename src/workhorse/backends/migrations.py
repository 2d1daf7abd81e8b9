"""Versioned schema migrations shipped as numbered SQL files beside a backend."""

from __future__ import annotations

import dataclasses
from importlib import resources


@dataclasses.dataclass(frozen=True)
class Migration:
    """One schema step: its version, its name and its SQL script."""

    version: int
    name: str
    sql: str


def bundled_migrations(package: str) -> list[Migration]:
    """The ``migrations/NNNN_name.sql`` files of ``package``, oldest first."""
    found: list[Migration] = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        stem, dot, suffix = entry.name.partition(".")
        if suffix != "sql" or not dot:
            continue
        number, _, name = stem.partition("_")
        found.append(Migration(int(number), name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)
