"""The sqlite backend: a durable job store in one file, shared by the processes of a host.

Chosen by ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.
"""

from workhorse.backends.sqlite.backend import SqliteBackend as SqliteBackend

__all__ = ["SqliteBackend"]
