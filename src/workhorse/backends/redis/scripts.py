"""The Lua scripts of the redis backend: one per state move, each run with EVALSHA.

Each ``<name>.lua`` of this package is prefixed with ``common.lua`` (the key layout and the
index moves shared by all). Every script takes KEYS = [namespace prefix] and ARGV[1] = the
result TTL in milliseconds, then its own arguments (see the header of each file).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from workhorse.backends.redis.direct import DirectConnections

NAMES = (
    "open", "enqueue", "claim", "settle", "checkin", "cancel",
    "cancel_all", "heartbeat", "unregister", "workers", "reap", "pause", "resume", "watch",
    "unwatch", "unwait",
    "next_due", "stats", "list", "prune",
    # admin
    "count", "make_ready", "delete", "history", "scan", "restore",
)


@functools.cache
def sources() -> dict[str, str]:
    """The full text of every script, by name."""
    folder = resources.files(__package__ or "workhorse.backends.redis")
    prelude = folder.joinpath("common.lua").read_text(encoding="utf-8")
    return {name: prelude + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
            for name in NAMES}


class Scripts:
    """The scripts, run on ``connections``; ``await scripts.run(name, keys, args)``."""

    def __init__(self, connections: DirectConnections) -> None:
        self._connections = connections
        self._sha = {name: hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()
                     for name, text in sources().items()}

    async def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` (sending its source if the server does not have it)."""
        try:
            return await self._connections.execute(
                "EVALSHA", self._sha[name], len(keys), *keys, *args)
        except NoScriptError:
            # The server's script cache is empty (a restart, SCRIPT FLUSH) and a NOSCRIPT
            # reply means nothing ran. EVAL sends the source and runs it in one step (and
            # caches it for the next EVALSHA), which no flush can come between.
            return await self._connections.execute(
                "EVAL", sources()[name], len(keys), *keys, *args)
