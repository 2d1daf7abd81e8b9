"""Opening a SQLite store: the URL, the connection's pragmas, and busy-safe transactions."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from workhorse.errors import ConfigurationError, StoreError, StoreFull

T = TypeVar("T")

#: RETURNING (used by every state move) arrived in SQLite 3.35.
MIN_SQLITE = (3, 35, 0)
#: First and longest pause between two tries of a transaction that found the file locked.
_FIRST_PAUSE = 0.005
_LONGEST_PAUSE = 0.1


def database_path(url: str) -> str:
    """The absolute file path in a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"not a sqlite:// URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"a sqlite URL names a file, not a host: {url!r}; write sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"a sqlite URL takes no query or fragment: {url!r}")
    # urlsplit keeps the slash that ends "sqlite://"; what follows it is the path.
    path = unquote(parts.path)[1:]
    if not path:
        raise ConfigurationError(
            f"the sqlite URL {url!r} has no file path; write sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    if path == ":memory:":
        raise ConfigurationError(
            "an in-memory SQLite database is private to one connection; use memory:// instead"
        )
    return os.path.abspath(path)


def connect(path: str, *, busy_timeout: float, retry_for: float) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode that leaves transactions to ``transaction``."""
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise StoreError(
            f"the sqlite backend needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; "
            f"this Python links SQLite {sqlite3.sqlite_version}"
        )
    try:
        # isolation_level=None: the sqlite3 module opens no transaction behind our back.
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the SQLite file {path!r}: {exc}") from exc
    try:
        # WAL lets readers run beside the one writer; it is a property of the file, so
        # only the first connection ever switches it (and may find the file busy).
        mode = retrying(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0],
                        retry_for=retry_for)
        if str(mode).lower() != "wal":
            raise StoreError(f"the SQLite file {path!r} cannot use WAL mode (it is {mode!r})")
        # NORMAL is durable across application crashes in WAL mode; only a power loss
        # may roll back the latest commits.
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def data_version(conn: sqlite3.Connection) -> int:
    """A number that changes whenever another connection commits to the file."""
    try:
        (version,) = conn.execute("PRAGMA data_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite failed: {exc}") from exc
    return int(version)


def transaction(
    conn: sqlite3.Connection,
    move: Callable[[sqlite3.Connection], T],
    *,
    write: bool,
    retry_for: float,
) -> T:
    """Run ``move`` in one transaction, tried again while the file is locked.

    A write starts with BEGIN IMMEDIATE so that it takes the file's single write lock
    before it reads anything: two processes claiming at once then run one after the other
    instead of both reading the same ready jobs. A read runs in one snapshot.
    """

    def attempt() -> T:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = move(conn)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return result

    return retrying(attempt, retry_for=retry_for)


def retrying(attempt: Callable[[], T], *, retry_for: float) -> T:
    """``attempt()``, tried again with a short capped pause while the file is locked.

    SQLite's busy timeout already waits for a lock, but some busy errors skip that handler
    (a checkpoint or WAL recovery in progress, a lock taken within a transaction), so the
    whole attempt is repeated until ``retry_for`` seconds have passed; then StoreError.
    Any other SQLite error becomes a StoreError at once (StoreFull for a full disk).
    """
    deadline = time.monotonic() + retry_for
    pause = _FIRST_PAUSE
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise _store_error(exc) from exc
            if time.monotonic() + pause > deadline:
                raise StoreError(
                    f"the SQLite file stayed locked by another connection for more than "
                    f"{retry_for:g} s ({exc})"
                ) from exc
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """True if ``exc`` means another connection holds a lock we need."""
    # The low byte of an extended result code is its primary code (SQLITE_BUSY_SNAPSHOT...).
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def callers_connection(connection: object, path: str) -> sqlite3.Connection:
    """``connection`` if it is a sqlite3 connection to the file at ``path``, usable from this
    thread; else ConfigurationError."""
    if not isinstance(connection, sqlite3.Connection):
        raise ConfigurationError(
            f"connection= must be a sqlite3.Connection, not {type(connection).__name__}"
        )
    try:
        files = {name: file for _, name, file in connection.execute("PRAGMA database_list")}
    except sqlite3.Error as exc:  # closed, or made by another thread
        raise ConfigurationError(f"connection= cannot be used here: {exc}") from exc
    main = files.get("main") or ""
    if not main or os.path.realpath(main) != os.path.realpath(path):
        raise ConfigurationError(
            f"connection= is open on {main or 'a temporary database'!r}, not on the store's "
            f"file {path!r}"
        )
    return connection


def in_callers_transaction(conn: sqlite3.Connection, move: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``move`` on the caller's connection in the caller's transaction; never commit it.

    A savepoint undoes a failed move (QueueFull) and leaves the caller's transaction as it
    was. With the sqlite3 module's implicit transactions (its default), an idle connection
    first gets the BEGIN its own next INSERT would have issued, so the caller's commit() or
    rollback() decides; in autocommit mode with no transaction open, the savepoint is a
    transaction of its own. A plain BEGIN defers the write lock to the first INSERT, as
    the caller's own writes do.
    """
    try:
        if not conn.in_transaction and _implicit_transactions(conn):
            conn.execute("BEGIN")
        conn.execute("SAVEPOINT workhorse_enqueue")
    except sqlite3.Error as exc:
        raise _store_error(exc) from exc
    try:
        result = move(conn)
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK TO workhorse_enqueue")
            conn.execute("RELEASE workhorse_enqueue")
        if isinstance(exc, sqlite3.Error):
            raise _store_error(exc) from exc
        raise
    try:
        conn.execute("RELEASE workhorse_enqueue")
    except sqlite3.Error as exc:
        raise _store_error(exc) from exc
    return result


def _implicit_transactions(conn: sqlite3.Connection) -> bool:
    """Whether the sqlite3 module opens transactions before DML on ``conn`` by itself."""
    # Python 3.12 added Connection.autocommit; its default keeps the older behaviour.
    legacy = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)
    return bool(getattr(conn, "autocommit", legacy) == legacy and conn.isolation_level is not None)


def _store_error(exc: sqlite3.Error) -> StoreError:
    if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
        return StoreError(f"the SQLite file is locked by another connection ({exc})")
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        # The transaction was rolled back: nothing of it was written.
        return StoreFull(f"the SQLite file cannot grow, the disk is full ({exc})")
    return StoreError(f"SQLite failed: {exc}")
