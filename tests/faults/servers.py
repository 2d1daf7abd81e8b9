"""Private store servers for fault tests: started on a spare port in a temp dir, restartable,
always stopped at the end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Where the PostgreSQL server programs are (Debian's layout); $PG_BIN overrides it.
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def spare_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server of our own with AOF (appendfsync always by default), so a restart keeps
    every acknowledged write.

    ``appendfsync="everysec"`` is Redis's common production setting: a crash of the machine
    may lose up to about a second of acknowledged writes (two if an fsync stalls).
    """

    def __init__(self, directory: Path, *, appendfsync: str = "always") -> None:
        self.directory = directory
        self.port = spare_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
             "--appendfsync", self.appendfsync, "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bound)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: no shutdown, no last AOF flush."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class PostgresServer:
    """A PostgreSQL server of our own (initdb in a temp dir, trust auth), restartable.

    initdb and postgres refuse to run as root, so when we are root the cluster's directory
    belongs to the ``postgres`` user and the server runs as that user. The directory is made
    with ``tempfile`` outside pytest's (root-only) temp tree, so that user can reach it, and
    removed by ``cleanup``.
    """

    def __init__(self, *, user: str = "postgres", max_connections: int = 100) -> None:
        self.port = spare_port()
        self.max_connections = max_connections
        self.directory = Path(tempfile.mkdtemp(prefix="workhorse-pg-"))
        self.data = self.directory / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user = user if os.geteuid() == 0 else None
        if self._user is not None:
            shutil.chown(self.directory, self._user, self._user)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "--encoding=UTF8", "--no-sync"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str]) -> None:
        with open(self.directory / "setup.log", "ab") as out:
            subprocess.run(args, check=True, stdout=out, stderr=out, timeout=120,
                           user=self._user, group=self._user, cwd=self.directory)

    def start(self) -> None:
        """Start the server (after a crash, it recovers from its WAL first)."""
        # fsync=off: these tests kill processes, not the machine, so the page cache holds
        # everything a committed transaction wrote; it spares the disk of a shared box.
        with open(self.directory / "postgres.log", "ab") as out:
            self.proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={self.directory}",
                 "-c", "fsync=off", "-c", f"max_connections={self.max_connections}"],
                stdout=out, stderr=out, user=self._user, group=self._user)
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres on port {self.port} exited: see "
                                   f"{self.directory / 'postgres.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (SIGINT: roll back and close every session) or
        ``immediate`` (SIGQUIT: every process quits at once, as in a crash; the next start
        recovers from the WAL). A SIGKILL of the postmaster alone would leave its backends
        running, holding the shared memory a new postmaster needs."""
        if self.proc is None:
            return
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        self.stop(mode="immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
