"""Backends: one store per module behind the ``Backend`` protocol; chosen by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from workhorse.backends.base import Backend
from workhorse.errors import ConfigurationError

#: URL scheme -> (module, class, extra that provides its dependencies or None).
_SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("workhorse.backends.memory", "MemoryBackend", None),
    "sqlite": ("workhorse.backends.sqlite", "SqliteBackend", None),
    "redis": ("workhorse.backends.redis", "RedisBackend", "redis"),
    "rediss": ("workhorse.backends.redis", "RedisBackend", "redis"),
    "postgresql": ("workhorse.backends.postgres", "PostgresBackend", "postgres"),
    "postgres": ("workhorse.backends.postgres", "PostgresBackend", "postgres"),
}


def redact_url(url: str) -> str:
    """``url`` without its password and query, for logs and messages."""
    parts = urlsplit(url)
    bare = url.split("?", 1)[0]
    if parts.password is None:
        return bare
    return bare.replace(f":{parts.password}@", ":***@", 1)


def supported_schemes() -> list[str]:
    """The URL schemes that pick a backend."""
    return sorted(_SCHEMES)


def create_backend(url: str) -> Backend:
    """The backend for ``url`` (not opened yet); ConfigurationError lists the schemes."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"unsupported store URL {url!r}: the scheme must be one of "
            + ", ".join(f"{s}://" for s in supported_schemes())
        )
    module_name, class_name, extra = _SCHEMES[scheme]
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install workhorse[{extra}]" if extra else ""
        raise ConfigurationError(f"the {scheme}:// backend cannot be loaded: {exc}{hint}") from exc
    backend: Backend = getattr(module, class_name)(url)
    return backend
