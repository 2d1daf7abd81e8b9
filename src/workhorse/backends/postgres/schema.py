"""The schema's versioned migrations: ``migrations/NNNN_name.sql``, applied in order.

Each applied migration is recorded in the table ``migrations`` of the schema. Each runs in
its own transaction together with that record, under a transaction-level advisory lock on
the schema, so a failure leaves the schema at the previous version and several processes
opening a new schema at once apply each migration once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from workhorse.backends import migrations
from workhorse.backends.migrations import Migration
from workhorse.errors import StoreError

_PLACEHOLDER = re.compile(r"\{(schema|schema_name|channel)\}")
_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at double precision NOT NULL
)"""


def bundled_migrations() -> list[Migration]:
    """The migrations shipped with this backend, oldest first."""
    return migrations.bundled_migrations("workhorse.backends.postgres")


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as an SQL string literal (standard_conforming_strings, on since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of ``schema``: readable, and within PostgreSQL's 63 bytes."""
    channel = f"workhorse_{schema}"
    if len(channel.encode()) <= 63:
        return channel
    return "workhorse_" + hashlib.sha256(schema.encode()).hexdigest()[:32]


def render(sql: str, schema: str) -> str:
    """``sql`` with the placeholders of the migration files filled in for ``schema``."""
    values = {"schema": quote_ident(schema), "schema_name": quote_literal(schema),
              "channel": quote_literal(channel_for(schema))}
    # One pass, so that a schema name holding "{channel}" stays as it is.
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], sql)


async def applied_versions(conn: AsyncConnection[Any], schema: str) -> set[int]:
    """The versions recorded in ``schema``; empty for a schema workhorse never migrated."""
    cursor = await conn.execute("SELECT to_regclass(%s)", (f"{quote_ident(schema)}.migrations",))
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return set()
    cursor = await conn.execute(f"SELECT version FROM {quote_ident(schema)}.migrations")
    return {version for (version,) in await cursor.fetchall()}


def check_known(applied: set[int], migrations: Sequence[Migration], where: str) -> None:
    """Raise StoreError if the schema is newer than the ``migrations`` this code knows."""
    known = {m.version for m in migrations}
    newer = applied - known
    if newer:
        raise StoreError(
            f"the PostgreSQL schema at {where} has version {max(newer)}, newer than this "
            f"workhorse knows ({max(known, default=0)}); upgrade workhorse"
        )


async def migrate(conn: AsyncConnection[Any], schema: str, migrations: Sequence[Migration],
                  where: str) -> int:
    """Apply the ``migrations`` not yet recorded in ``schema``; returns how many.

    ``conn`` must be in autocommit mode: each migration is a transaction of its own.
    """
    check_known(await applied_versions(conn, schema), migrations, where)
    ident = quote_ident(schema)
    applied = 0
    for migration in migrations:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext('migrate'))",
                               (schema,))
            # Under the lock: another process may have created or migrated it meanwhile.
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident}")
            await conn.execute(render(_CREATE_VERSION_TABLE, schema))
            if migration.version in await applied_versions(conn, schema):
                continue
            # Without parameters psycopg sends the script as one simple query, statements and
            # all, and leaves any % in it alone.
            await conn.execute(render(migration.sql, schema))
            await conn.execute(
                f"INSERT INTO {ident}.migrations (version, name, applied_at) "
                "VALUES (%s, %s, extract(epoch FROM clock_timestamp()))",
                (migration.version, migration.name),
            )
            applied += 1
    return applied
