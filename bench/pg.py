"""The dedicated PostgreSQL databases of the PostgreSQL peers (procrastinate, saq-postgres).

Each peer keeps its tables in a database of its own on the bench's PostgreSQL server, so
that nothing it creates can meet workhorse's schema or another peer's tables. Between runs
the database's ``public`` schema is dropped with everything in it and created again.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from bench.config import POSTGRES_DSN


def dsn(database: str) -> str:
    """``POSTGRES_DSN`` with its database replaced by ``database``."""
    return urlsplit(POSTGRES_DSN)._replace(path=f"/{database}").geturl()


def reset_database(database: str) -> str:
    """Create ``database`` if missing and empty its ``public`` schema; its DSN."""
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (database,)).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    target = dsn(database)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return target
