"""The schema's versioned migrations: ``migrations/NNNN_name.sql``, applied in order.

Each applied migration is recorded in ``workhorse_schema(version)``, and each runs in its
own transaction together with that record, so a failure leaves the file at the previous
version and several processes opening a new file at once apply each migration once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence

from workhorse.backends import migrations
from workhorse.backends.migrations import Migration
from workhorse.backends.sqlite.connection import transaction
from workhorse.errors import StoreError

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS workhorse_schema (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL
)"""


def bundled_migrations() -> list[Migration]:
    """The migrations shipped with this backend, oldest first."""
    return migrations.bundled_migrations("workhorse.backends.sqlite")


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    """The versions recorded in the file; empty for a file workhorse never opened."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'workhorse_schema'"
    ).fetchone()
    if exists is None:
        return set()
    return {version for (version,) in conn.execute("SELECT version FROM workhorse_schema")}


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[Migration], *, retry_for: float
) -> list[int]:
    """Apply the ``migrations`` not yet recorded in the file; returns their versions."""
    known = {m.version for m in migrations}
    done = transaction(conn, applied_versions, write=False, retry_for=retry_for)
    newer = done - known
    if newer:
        raise StoreError(
            f"the SQLite file has schema version {max(newer)}, newer than this workhorse "
            f"knows ({max(known, default=0)}); upgrade workhorse"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version in done:
            continue

        def apply(conn: sqlite3.Connection, migration: Migration = migration) -> bool:
            conn.execute(_CREATE_VERSION_TABLE)
            # Another process may have applied it since we looked, before we held the lock.
            if migration.version in applied_versions(conn):
                return False
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO workhorse_schema (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            return True

        if transaction(conn, apply, write=True, retry_for=retry_for):
            applied.append(migration.version)
    return applied


def _statements(script: str) -> Iterator[str]:
    """The statements of ``script`` one by one.

    ``Connection.executescript`` would run them in one call, but it commits any open
    transaction first, which would split a migration from its version record.
    """
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if _strip_comments(pending):
        raise StoreError(f"a migration ends with an incomplete statement: {pending.strip()!r}")


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines()).strip()
