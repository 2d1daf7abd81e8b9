"""Reading a ``redis://`` or ``rediss://`` URL: our own query parameters and redis-py's."""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool
from redis.asyncio.connection import parse_url as redis_parse_url
from redis.exceptions import DataError

from workhorse.errors import ConfigurationError

DEFAULT_NAMESPACE = "workhorse"
#: Finished jobs are kept this long (seconds) unless the URL or the constructor says otherwise.
DEFAULT_RESULT_TTL = 7 * 86400.0
#: Defaults for redis-py's options, which the URL's query may override: an unreachable
#: server fails a call within these bounds instead of hanging.
CONNECTION_DEFAULTS: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0}

#: Query parameters that are ours, removed before the URL goes to redis-py.
_OURS = ("namespace", "result_ttl")


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """What a Redis store URL asks for."""

    #: Every key of the store is ``{namespace}:...``.
    namespace: str
    #: Seconds a finished job is kept before Redis expires it; None keeps it until pruned.
    result_ttl: float | None
    #: Keyword arguments of redis-py's ``ConnectionPool``.
    connection: dict[str, Any]
    #: The server, for messages (no password).
    location: str

    @property
    def prefix(self) -> str:
        """The start of every key; the braces make it a Redis Cluster hash tag."""
        return "{" + self.namespace + "}:"

    @property
    def socket_timeout(self) -> float | None:
        """How long a read may wait for the server; None for no limit."""
        timeout = self.connection.get("socket_timeout")
        return None if timeout is None else float(timeout)

    def new_pool(self) -> ConnectionPool:
        """A connection pool of its own (one per event loop)."""
        return ConnectionPool(**self.connection)


def parse_url(url: str, *, result_ttl: float | None = DEFAULT_RESULT_TTL) -> RedisSettings:
    """The settings of ``url``; its ``result_ttl`` query parameter wins over the argument.

    Raises ConfigurationError for a bad URL, namespace, TTL or unknown redis-py option.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a redis:// or rediss:// URL: {_redacted(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in query if key in _OURS}
    rest = [(key, value) for key, value in query if key not in _OURS]
    plain = urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))

    namespace = ours.get("namespace", DEFAULT_NAMESPACE)
    if not namespace or "{" in namespace or "}" in namespace:
        raise ConfigurationError(
            f"the Redis namespace must be non-empty and without braces, not {namespace!r}")
    if "result_ttl" in ours:
        result_ttl = _ttl(ours["result_ttl"])
    elif result_ttl is not None and not (math.isfinite(result_ttl) and result_ttl > 0):
        raise ConfigurationError(f"result_ttl must be a positive number or None, not {result_ttl}")

    try:
        options = dict(redis_parse_url(plain))
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {_redacted(url)!r}: {exc}") from exc
    # Replies are parsed as bytes (payloads are binary): redis-py must not decode them.
    connection = {**CONNECTION_DEFAULTS, **options, "decode_responses": False}
    connection["connection_class"] = _hiredis_packing(
        connection.get("connection_class", Connection))
    try:
        # Builds a connection object without connecting: an unknown option fails here, at
        # set-up, rather than at the first command.
        ConnectionPool(**connection).make_connection()  # type: ignore[no-untyped-call]
    except TypeError as exc:
        raise ConfigurationError(f"bad option in the Redis URL {_redacted(url)!r}: {exc}") from exc
    location = (f"{scheme}://{options.get('host', 'localhost')}:{options.get('port', 6379)}"
                f"/{options.get('db', 0)}")
    return RedisSettings(namespace=namespace, result_ttl=result_ttl, connection=connection,
                         location=location)


class _HiredisPacking(AbstractConnection):
    """Packs commands with hiredis's C packer.

    redis-py's asyncio connection packs in Python, argument by argument; for a batch of
    thousands of jobs that cost more than the Lua script that stores them.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str) and " " in head:  # "CLIENT SETNAME" and the like
            args = (*head.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


def _hiredis_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    return type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


def _ttl(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigurationError(
            f"result_ttl must be a positive number of seconds or 'none', not {text!r}")
    return seconds


def _redacted(url: str) -> str:
    """``url`` with its password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
