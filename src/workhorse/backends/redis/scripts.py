"""The Lua scripts of the redis backend: one per state move, each run with EVALSHA.

Each ``<name>.lua`` of this package is prefixed with ``common.lua`` (the key layout and the
index moves shared by all). Every script takes KEYS = [namespace prefix] and ARGV[1] = the
result TTL in milliseconds, then its own arguments (see the header of each file).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

NAMES = (
    "open", "enqueue", "claim", "settle", "checkin", "cancel",
    "cancel_all", "heartbeat", "unregister", "workers", "reap", "pause", "resume", "watch",
    "unwatch",
    "next_due", "stats", "list", "prune",
)


@functools.cache
def sources() -> dict[str, str]:
    """The full text of every script, by name."""
    folder = resources.files(__package__ or "workhorse.backends.redis")
    prelude = folder.joinpath("common.lua").read_text(encoding="utf-8")
    return {name: prelude + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
            for name in NAMES}


class Scripts:
    """The scripts registered on one client; ``await scripts.run(name, keys, args)``."""

    def __init__(self, client: Redis) -> None:
        self._scripts = {name: client.register_script(text) for name, text in sources().items()}

    async def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` (loading it into the server first if the server lost it)."""
        script: AsyncScript = self._scripts[name]
        return await script(keys=keys, args=args)
