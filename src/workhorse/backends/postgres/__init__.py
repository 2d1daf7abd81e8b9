"""The postgres backend: a durable job store in a PostgreSQL schema, for many hosts.

Chosen by ``postgresql://user:password@host:5432/dbname?schema=workhorse`` (or
``postgres://``); needs ``workhorse[postgres]`` (psycopg 3 and psycopg-pool).
"""

from workhorse.backends.postgres.backend import PostgresBackend as PostgresBackend

__all__ = ["PostgresBackend"]
