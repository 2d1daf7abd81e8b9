"""The store URL of the postgres backend: workhorse's own query parameters and libpq's rest.

``postgresql://user:password@host:5432/dbname?schema=workhorse&migrate=true``: ``schema``
(default ``workhorse``) holds every table, ``migrate`` (default true) lets ``open`` bring
the schema up to date. Every other query parameter (``sslmode``, ``connect_timeout``...)
goes to libpq unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from workhorse.backends import redact_url
from workhorse.errors import ConfigurationError

DEFAULT_SCHEMA = "workhorse"
#: PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes).
MAX_IDENTIFIER = 63
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the backend needs from its URL."""

    #: libpq's connection string, without workhorse's parameters.
    conninfo: str
    schema: str
    #: Whether ``open`` applies pending migrations (else it refuses a schema behind).
    migrate: bool
    #: ``host:port/dbname``, for messages: the URL without its credentials.
    where: str


def parse(url: str, *, connect_timeout: float) -> Settings:
    """The settings in ``url``; ConfigurationError if it is not a usable PostgreSQL URL.

    Unless the URL sets them, connecting gives up after ``connect_timeout`` seconds and
    the connections are named ``workhorse`` in ``pg_stat_activity``.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a postgresql:// URL: {redact_url(url)!r}")
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("schema", "migrate"):
            ours[key] = value
        else:
            theirs.append((key, value))
    schema = ours.get("schema", DEFAULT_SCHEMA)
    if not schema or len(schema.encode()) > MAX_IDENTIFIER or "\x00" in schema:
        raise ConfigurationError(
            f"schema={schema!r} in the PostgreSQL URL must be 1 to {MAX_IDENTIFIER} bytes long"
        )
    migrate = ours.get("migrate", "true").lower()
    if migrate not in _TRUE | _FALSE:
        raise ConfigurationError(f"migrate={migrate!r} in the PostgreSQL URL must be true or false")

    libpq_url = urlunsplit(parts._replace(query=urlencode(theirs)))
    given = {key for key, _ in theirs}
    defaults: dict[str, str | int] = {}
    if "connect_timeout" not in given:
        # libpq counts whole seconds and treats less than 2 as 2.
        defaults["connect_timeout"] = max(2, math.ceil(connect_timeout))
    if "application_name" not in given:
        defaults["application_name"] = "workhorse"
    try:
        conninfo = make_conninfo(libpq_url, **defaults)
        fields = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid PostgreSQL URL {redact_url(url)!r}: {exc}") from exc
    where = (f"{fields.get('host') or 'localhost'}:{fields.get('port') or 5432}"
             f"/{fields.get('dbname') or fields.get('user') or ''}")
    return Settings(conninfo=conninfo, schema=schema, migrate=migrate in _TRUE, where=where)
