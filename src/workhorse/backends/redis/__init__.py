"""The redis backend: a durable job store in Redis, shared by every process that reaches it.

Chosen by ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS), with the query
parameters ``namespace`` (default ``workhorse``) and ``result_ttl`` (seconds, or ``none``).
"""

from workhorse.backends.redis.backend import RedisBackend as RedisBackend

__all__ = ["RedisBackend"]
